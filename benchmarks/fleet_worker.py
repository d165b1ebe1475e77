"""One flow process of `bench_fleet.py`: a fleet replay (alone or as one process of a cluster), or
the live flow over many simulated agents with each reading's latency from agent to DuckDB.

Run by `bench_fleet.py`, which reads the one JSON line this prints at the end:

    python benchmarks/fleet_worker.py replay SPEC.json --db DB [--shards K]
        [--process-id I --addresses "h:p;h:p"]
    python benchmarks/fleet_worker.py live --port P --homes N --t0 T --seconds S --warmup W
        --db DB [--cpu C]

Latency is measured in the sink: a reading's row is in DuckDB when `write_items` has committed
the batch that holds it, and the reading was produced at its own timestamp (the simulated agents
stamp each reading with the wall-clock time it is produced at, see `fleet_agents.py`). Nothing
is added to the product for this: the benchmark wraps the sink's partition.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bytewax.testing import cluster_main, run_main  # noqa: E402
from fleet_agents import TOKEN, head_seq, home_name, produced_at_us  # noqa: E402

from flows.dataflow import get_flow  # noqa: E402
from flows.fleet import (  # noqa: E402
    FleetAgentSource,
    FleetReplaySource,
    ShardedDuckDBSink,
    ShardedLabelSource,
    _ShardPartition,
    fleet_flow,
    open_shards,
)
from flows.sink import SinkItem  # noqa: E402
from flows.sources import StoppableSource  # noqa: E402
from nilm.settings import AgentSettings, HomeSettings, Settings  # noqa: E402


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def warm_up() -> None:
    """Loads what every process loads once, before the clock starts: numba and the detectors'
    compiled kernels (from numba's cache) take a few CPU seconds a process, which would
    otherwise weigh on the 2-process run twice in a short replay."""
    from nilm.detection import HomeEventDetector

    HomeEventDetector("warm-up")


def replay(args: argparse.Namespace) -> dict[str, Any]:
    files = {h: [Path(p) for p in ps] for h, ps in json.loads(Path(args.spec).read_text()).items()}
    settings = Settings(db_path=args.db, shards=args.shards)
    addresses = [a for a in (args.addresses or "").split(";") if a]
    owner = not addresses or args.process_id == 0
    connections = open_shards(settings) if owner else {}
    counts: Counter[str] = Counter()
    read: Counter[str] = Counter()

    def on_rows(n: int) -> None:
        read["rows"] += n

    source = FleetReplaySource(files, chunk_rows=args.chunk_rows, on_rows=on_rows)
    flow = fleet_flow(settings, connections, readings=source, counts=counts, follow_labels=False)
    warm_up()
    started, cpu0 = time.time(), cpu_s()
    try:
        if addresses:
            cluster_main(flow, addresses, args.process_id)
        else:
            run_main(flow)
    finally:
        for con in connections.values():
            con.close()
    return {
        "started": started,
        "ended": time.time(),
        "cpu_s": cpu_s() - cpu0,
        "rows_read": read["rows"],
        "written": dict(counts),
    }


class _TimedPartition(_ShardPartition):
    """The shard partition, noting when each reading's row was committed."""

    def __init__(
        self, inner: _ShardPartition, seen: dict[str, list[Any]], window: dict[str, float]
    ) -> None:
        super().__init__(inner.cur, inner.counts, inner.on_write)
        self.seen = seen
        self.window = window

    def write_batch(self, values: list[SinkItem]) -> None:
        super().write_batch(values)
        now = time.time()
        self.window.setdefault("first_commit", now)
        now_us = now * 1e6
        for table, value in values:
            if table == "readings" and len(value):
                # (ts_us, committed at) of every reading of the batch
                self.seen[value.home_id].append((value.ts_us.copy(), now_us))


class _TimedSink(ShardedDuckDBSink):
    def __init__(
        self, inner: ShardedDuckDBSink, seen: dict[str, list[Any]], window: dict[str, float]
    ) -> None:
        super().__init__(inner.connections, inner.shards, inner.counts, inner.on_write)
        self.seen = seen
        self.window = window

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ShardPartition:
        part = super().build_part(step_id, for_part, resume_state)
        return _TimedPartition(part, self.seen, self.window)


def live(args: argparse.Namespace) -> dict[str, Any]:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # before any thread: every thread inherits it
    agent = AgentSettings(
        url="", token=TOKEN, batch_limit=args.batch_limit, poll_interval_s=args.poll_s
    )
    homes = tuple(
        HomeSettings(
            home_name(i),
            AgentSettings(
                f"http://127.0.0.1:{args.port}/{home_name(i)}", TOKEN, args.batch_limit, args.poll_s
            ),
        )
        for i in range(args.homes)
    )
    settings = Settings(db_path=args.db, agent=agent, homes=homes, snapshot_interval_s=10.0)
    connections = open_shards(settings)
    seen: dict[str, list[Any]] = defaultdict(list)
    # The window is measured from the first commit on (plus a warm-up), so that the time this
    # process takes to start on a busy machine does not count as latency.
    window: dict[str, float] = {}
    give_up = time.time() + 120.0

    def stop() -> bool:
        first = window.get("first_commit")
        if first is None:
            return time.time() >= give_up
        window.setdefault("start", first + args.warmup)
        window.setdefault("end", first + args.warmup + args.seconds)
        now = time.time()
        # The CPU the flow spends within the window: the steady state, without start-up.
        if now >= window["start"] and "cpu_start" not in window:
            window["cpu_start"], window["cpu_start_at"] = cpu_s(), now
        if now >= window["end"] and "cpu_end" not in window:
            window["cpu_end"], window["cpu_end_at"] = cpu_s(), now
        return now >= window["end"]

    # `fleet_flow` as `nilm run` builds it, with the sink's partitions timed.
    source = StoppableSource(FleetAgentSource(homes), stop)
    labels = ShardedLabelSource(connections, settings.shards, settings.label_poll_s, stop)
    sink = _TimedSink(ShardedDuckDBSink(connections, settings.shards), seen, window)
    flow = get_flow(settings, source, sink, labels)
    warm_up()
    cpu0 = cpu_s()
    started = time.time()
    try:
        run_main(flow)
    finally:
        for con in connections.values():
            con.close()
    cpu = cpu_s() - cpu0
    if "end" not in window:
        raise SystemExit("nothing was stored within 120 s: are the agents up?")
    return {
        **_latencies(args, seen, window["start"], window["end"]),
        "cpu_s": cpu,
        "wall_s": time.time() - started,
        "window_s": window["end"] - window["start"],
        "window_cpu_s": window.get("cpu_end", cpu_s()) - window.get("cpu_start", cpu0),
        "window_wall_s": window.get("cpu_end_at", time.time())
        - window.get("cpu_start_at", started),
        "window_rows_committed": sum(
            len(ts)
            for v in seen.values()
            for ts, at in v
            if window.get("cpu_start_at", 0.0) * 1e6 <= at < window.get("cpu_end_at", 1e12) * 1e6
        ),
        "rows_stored_total": sum(len(ts) for v in seen.values() for ts, _ in v),
    }


def _latencies(
    args: argparse.Namespace, seen: dict[str, list[Any]], start: float, end: float
) -> dict[str, Any]:
    """Each reading produced in the measured window: its latency to DuckDB, or, when it was not
    stored by the end, the time it had waited by then (a lower bound, so a flow that falls
    behind shows)."""
    lat: list[np.ndarray] = []
    stored = missing = 0
    for i in range(args.homes):
        home = home_name(i)
        got: dict[int, float] = {}
        for ts_us, committed in seen.get(home, []):
            for t in ts_us.tolist():
                got.setdefault(t, committed)
        # Produced in the window (the last second left for the flow to store it).
        s0 = head_seq(args.t0, i, args.homes, round(start * 1e6)) + 1
        s1 = head_seq(args.t0, i, args.homes, round((end - 1.0) * 1e6))
        out = []
        for seq in range(s0, s1 + 1):
            t_us = produced_at_us(args.t0, i, args.homes, seq)
            c = got.get(t_us)
            if c is None:
                missing += 1
                out.append(end * 1e6 - t_us)
            else:
                stored += 1
                out.append(c - t_us)
        lat.append(np.asarray(out, float) / 1e6)
    all_lat = np.concatenate(lat) if lat else np.zeros(0)
    pct = {f"p{q}": float(np.percentile(all_lat, q)) if len(all_lat) else None
           for q in (50, 90, 99)}  # fmt: skip
    return {
        "homes": args.homes,
        "readings_in_window": len(all_lat),
        "stored": stored,
        "missing": missing,
        "max_s": float(all_lat.max()) if len(all_lat) else None,
        **pct,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("replay")
    p.add_argument("spec")
    p.add_argument("--db", required=True)
    p.add_argument("--shards", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--addresses", default="")
    p.add_argument("--chunk-rows", type=int, default=20_000)
    p = sub.add_parser("live")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--homes", type=int, required=True)
    p.add_argument("--t0", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument("--db", required=True)
    p.add_argument("--cpu", type=int, default=None)
    p.add_argument("--batch-limit", type=int, default=500)
    p.add_argument("--poll-s", type=float, default=0.1)
    args = ap.parse_args()
    result = replay(args) if args.mode == "replay" else live(args)
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
