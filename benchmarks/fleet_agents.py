"""Many simulated Pi agents in one process, for `bench_fleet.py`'s live mode.

Serves `GET /<home>/v1/readings?after=SEQ&limit=N[&wait=S]` for homes `home-00000` ...
in the agent's JSON format (`pi_agent/server.py`: `readings` with their `seq`, `last_seq`,
`first_seq`, long-polling with `wait`), on the agent's own asyncio HTTP server. Each home
produces one reading a second in real time: reading `seq` of home `i` exists from wall-clock
time `produced_at(t0, i, n, seq)` on and carries that time as its `timestamp_utc`, so the flow
side can tell each reading's latency from its timestamp alone. Homes are spread evenly over the
second (home i at i/n s past it), as independent agents would be, not all at once.

    python benchmarks/fleet_agents.py --port P --homes N --t0 T [--cpu C]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pi_agent.httpd import HttpError, HttpServer, Request, Response  # noqa: E402

TOKEN = "fleet-bench"
MAX_LIMIT = 10_000


def home_name(i: int) -> str:
    return f"home-{i:05d}"


def produced_at_us(t0: float, i: int, n: int, seq: int) -> int:
    """When (epoch µs) home `i` of `n` produces reading `seq` (1, 2, ...)."""
    return round(t0 * 1e6) + seq * 1_000_000 + (i * 1_000_000) // n


def produced_at(t0: float, i: int, n: int, seq: int) -> float:
    return produced_at_us(t0, i, n, seq) / 1e6


def head_seq(t0: float, i: int, n: int, now_us: int) -> int:
    """The newest reading home `i` has produced by `now_us` (0: none yet)."""
    return max((now_us - produced_at_us(t0, i, n, 0)) // 1_000_000, 0)


def reading(t0: float, i: int, n: int, seq: int) -> dict[str, object]:
    """A 120/240 V home: a base load, a 400 W load on leg a every 5 minutes, a 240 V 1.5 kW
    load on both legs now and then, and a little noise: enough for the detectors to work on."""
    ts_us = produced_at_us(t0, i, n, seq)
    ts = datetime.fromtimestamp(ts_us // 1_000_000, UTC).replace(microsecond=ts_us % 1_000_000)
    phase = seq + 37 * i
    noise = 1.5 * math.sin(phase * 12.9898) + 1.0 * math.sin(phase * 78.233)
    a = 180.0 + (400.0 if (phase // 300) % 2 else 0.0) + noise
    b = 120.0 - noise
    if (phase // 900) % 4 == 1:
        a, b = a + 750.0, b + 750.0
    row: dict[str, object] = {
        "seq": seq,
        "timestamp_utc": ts.isoformat(timespec="microseconds").replace("+00:00", "Z"),
    }
    for leg, p in (("a", a), ("b", b)):
        pf = 0.96
        row.update({
            f"{leg}_voltage": 120.0 + 0.3 * math.sin(phase * 0.01),
            f"{leg}_current": p / pf / 120.0,
            f"{leg}_act_power": p,
            f"{leg}_aprt_power": p / pf,
            f"{leg}_pf": pf,
            f"{leg}_freq": 60.0,
        })  # fmt: skip
    return row


def make_server(t0: float, n: int) -> HttpServer:
    index = {home_name(i): i for i in range(n)}
    expected = f"Bearer {TOKEN}"

    async def readings(request: Request) -> Response:
        home, _, rest = request.path.strip("/").partition("/")
        if rest != "v1/readings" or home not in index:
            raise HttpError(404, f"no such path {request.path}")
        if request.headers.get("authorization") != expected:
            raise HttpError(401, "missing or wrong bearer token")
        i = index[home]
        try:
            after = int(request.query.get("after", 0))
            limit = min(max(int(request.query.get("limit", 1000)), 1), MAX_LIMIT)
            wait = min(float(request.query.get("wait", 0)), 60.0)
        except ValueError:
            raise HttpError(400, "after, limit and wait must be numbers") from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        head = head_seq(t0, i, n, time.time_ns() // 1000)
        while head <= after and (left := deadline - loop.time()) > 0:
            # Sleep until this home's next reading (or the end of the long poll).
            due = produced_at_us(t0, i, n, after + 1) / 1e6 - time.time()
            await asyncio.sleep(max(min(due, left), 0.0) + 0.0005)
            head = head_seq(t0, i, n, time.time_ns() // 1000)
        rows = [reading(t0, i, n, s) for s in range(after + 1, min(head, after + limit) + 1)]
        body = {"readings": rows, "last_seq": head, "first_seq": 1 if head else None}
        return Response(200, json.dumps(body).encode())

    return HttpServer({("GET", "/*"): readings})


async def serve(port: int, t0: float, n: int) -> None:
    server = make_server(t0, n)
    await server.start("127.0.0.1", port)
    print(f"READY {server.port}", flush=True)
    try:
        await asyncio.Event().wait()  # until the benchmark terminates this process
    finally:
        await server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--homes", type=int, required=True)
    ap.add_argument("--t0", type=float, required=True)
    ap.add_argument("--cpu", type=int, default=None)
    args = ap.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.t0, args.homes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
