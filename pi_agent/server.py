"""The HTTP API the PC pulls from, and a Shelly-style `/rpc` for the simulated meter.

- `GET /v1/readings?after=SEQ&limit=N[&wait=S]` (bearer token): committed readings with
  sequence numbers above SEQ, oldest first, at most N. With `wait`, an empty answer is held
  up to S seconds until new readings are committed (long poll): the live stream.
  Answer: `{"readings": [{"seq", "timestamp_utc", "a_voltage", ...}], "last_seq": head,
  "first_seq": oldest kept}`; a reader whose `after + 1 < first_seq` has lost readings to
  retention.
- `GET /healthz`: counters (poller, spool, transport, API); no token, it holds no readings.
- `GET /rpc/EM.GetStatus?id=0` and `POST /rpc` (sim only): the simulated meter, so that the
  HTTP transport is exercised over real sockets.

Served by `pi_agent.httpd` (standard library; see there why not aiohttp).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pi_agent.httpd import Handler, HttpError, HttpServer, Request, Response
from pi_agent.spool import Spool, row_to_json

if TYPE_CHECKING:
    from pi_agent.sim import SimShelly

__all__ = ["ApiStats", "CommitSignal", "make_server"]

logger = logging.getLogger(__name__)

MAX_LIMIT = 10_000
MAX_WAIT_S = 60.0


@dataclass(slots=True)
class ApiStats:
    """What the API has served, for /healthz."""

    requests: int = 0
    rows_served: int = 0
    unauthorized: int = 0
    caught_up: int = 0  # requests that found nothing new on arrival (the reader is live)


class CommitSignal:
    """Wakes every long-polling reader when new readings are committed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout_s)


def _json(value: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(value).encode())


def _int_arg(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, f"{name}={raw!r} is not an integer") from None
    if not lo <= value <= hi:
        raise HttpError(400, f"{name}={value} must be within [{lo}, {hi}]")
    return value


def make_server(
    spool: Spool,
    token: str,
    health: Callable[[], dict[str, Any]],
    commits: CommitSignal,
    sim: SimShelly | None = None,
    stats: ApiStats | None = None,
) -> HttpServer:
    """The agent's HTTP server (not yet listening); `health()` gives the /healthz counters."""
    counters = stats if stats is not None else ApiStats()
    expected = f"Bearer {token}".encode()

    async def readings(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode("latin-1")
        if not hmac.compare_digest(given, expected):
            counters.unauthorized += 1
            raise HttpError(
                401,
                "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": "Bearer"},
            )
        after = _int_arg(request, "after", 0, 0, 2**62)
        limit = _int_arg(request, "limit", 1000, 1, MAX_LIMIT)
        try:
            wait = min(float(request.query.get("wait", 0)), MAX_WAIT_S)
        except ValueError:
            raise HttpError(400, "wait must be a number of seconds") from None
        counters.requests += 1
        rows = spool.after(after, limit)
        if not rows:
            counters.caught_up += 1
        if not rows and wait > 0:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while not rows and (left := deadline - loop.time()) > 0:
                await commits.wait(left)
                rows = spool.after(after, limit)
        counters.rows_served += len(rows)
        return _json(
            {
                "readings": [row_to_json(r) for r in rows],
                "last_seq": spool.last_seq,
                "first_seq": spool.first_seq(),
            }
        )

    async def healthz(request: Request) -> Response:
        return _json(health())

    routes: dict[tuple[str, str], Handler] = {
        ("GET", "/v1/readings"): readings,
        ("GET", "/healthz"): healthz,
    }

    if sim is not None:
        shelly = sim

        async def rpc_get(request: Request) -> Response:
            method = request.path.removeprefix("/rpc/")
            params: dict[str, Any] = dict(request.query)
            frame = shelly.rpc({"id": 1, "method": method, "params": params})
            if "error" in frame:
                return _json(frame["error"], 404 if frame["error"]["code"] == 404 else 500)
            return _json(frame["result"])

        async def rpc_post(request: Request) -> Response:
            try:
                frame = json.loads(request.body)
            except ValueError:
                raise HttpError(400, "the body is not a JSON-RPC frame") from None
            return _json(shelly.rpc(frame))

        routes[("GET", "/rpc/*")] = rpc_get
        routes[("POST", "/rpc")] = rpc_post
    return HttpServer(routes)
