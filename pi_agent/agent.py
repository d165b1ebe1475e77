"""The agent assembled: transport → poller → spool → HTTP API, on one asyncio loop.

One loop, one thread, the standard library only (plus bleak for BLE): the poller appends to the
spool's buffer, a committer commits it every `commit_interval_s` and wakes long-polling readers,
and retention runs once a minute. SQLite calls are short (a commit of a few readings, a page of a
few thousand rows), so they run on the loop itself; a Pi Zero 2W has no core to spare for a
thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from nilm.records import Reading, to_epoch_us
from pi_agent.config import AgentConfig
from pi_agent.poller import Poller, TickClock, VirtualClock, WallClock
from pi_agent.server import ApiStats, CommitSignal, make_server
from pi_agent.spool import Spool
from pi_agent.transports import HttpTransport, Transport

if TYPE_CHECKING:
    from pi_agent.sim import SimShelly

__all__ = ["Agent"]

logger = logging.getLogger(__name__)

RETENTION_EVERY_S = 60.0


class Agent:
    """Everything the `python -m pi_agent` process runs.

    Parameters
    ----------
    config
        The agent's settings.
    token
        The bearer token the PC must send.
    transport
        Overrides the transport `config.transport` names (tests pass fakes).
    """

    def __init__(self, config: AgentConfig, token: str, transport: Transport | None = None) -> None:
        self.config = config
        self.token = token
        self.spool = Spool(
            config.spool,
            commit_interval_s=config.commit_interval_s,
            retention_days=config.retention_days,
            max_bytes=int(config.max_spool_mb * 1024 * 1024),
        )
        self.sim: SimShelly | None = None
        self.clock: TickClock
        if config.transport == "sim":
            from nilm.simulator import SimulatorConfig
            from pi_agent.sim import SimShelly

            start = config.start_utc() or datetime.now(UTC).replace(microsecond=0)
            self.sim = SimShelly(
                SimulatorConfig(seed=config.seed, start=start, home_id=config.home_id),
                duration_s=config.duration_s,
            )
            resume = start
            if self.spool.last_ts_us is not None:
                last = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
                    microseconds=self.spool.last_ts_us
                )
                resume = max(start, last + timedelta(seconds=config.interval_s))
            # The simulated meter resumes where the spool ends: no simulated second is lost
            # while the agent is down, so a test can demand every one of them downstream.
            self.clock = VirtualClock(
                resume,
                config.interval_s,
                config.speed,
                backfill_until=datetime.now(UTC) if config.backfill else None,
            )
        else:
            self.clock = WallClock(config.interval_s)
        self.transport = transport or self._transport()
        self.commits = CommitSignal()
        self.api = ApiStats()
        self.poller = Poller(
            self.transport,
            self._on_reading,
            self.clock,
            # A little longer than the transport's own timeout, which fires first and lets the
            # transport reset its link (BLE drops a connection whose call hung).
            timeout_s=max(config.request_timeout_s + 1.0, self.clock.period_s),
        )
        self.started_monotonic = time.monotonic()
        self.started_cpu = time.process_time()
        self._stop = asyncio.Event()

    def _transport(self) -> Transport:
        c = self.config
        if c.transport == "sim":
            from pi_agent.sim import SimTransport

            assert self.sim is not None
            return SimTransport(self.sim)
        if c.transport == "http":
            return HttpTransport(c.shelly_url, timeout_s=c.request_timeout_s)
        from pi_agent.ble import BleTransport

        return BleTransport(
            address=c.ble_address or None,
            name=c.ble_name or None,
            adapter=c.ble_adapter or None,
            connect_timeout_s=c.ble_connect_timeout_s,
            call_timeout_s=c.request_timeout_s,
        )

    def retention_now_us(self) -> int:
        """ "Now" for retention: the wall clock, or in simulation the simulated clock (a
        simulated day in the past must not be deleted as old the moment it is written)."""
        if self.sim is not None:
            last = self.spool.last_ts_us
            return last if last is not None else to_epoch_us(self.sim.config.start)
        return to_epoch_us(datetime.now(UTC))

    def _on_reading(self, reading: Reading) -> None:
        self.spool.append(to_epoch_us(reading.ts), reading.values())

    def health(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        up = time.monotonic() - self.started_monotonic
        return {
            "status": "ok" if not self.poller.finished or self.sim else "stopped",
            "transport": self.transport.name,
            "uptime_s": round(up, 3),
            "seq": self.spool.last_seq,
            "pending": self.spool.pending,
            "fetched_after": self.spool.fetched_after,
            "poller": self.poller.stats.as_dict(),
            "poller_finished": self.poller.finished,
            "spool": {
                "path": str(self.spool.path),
                "rows": self.spool.count(),
                "bytes": self.spool.size_bytes(),
                **asdict(self.spool.stats),
            },
            "api": asdict(self.api),
            "transport_stats": self.transport.stats(),
            "process": {
                "pid": os.getpid(),
                "max_rss_kb": usage.ru_maxrss,
                "cpu_s": round(time.process_time() - self.started_cpu, 3),
            },
        }

    async def _committer(self) -> None:
        tick = max(min(self.config.commit_interval_s / 4, 0.5), 0.005)
        last_retention = time.monotonic()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), tick)
            if self.spool.flush_due() or (self._stop.is_set() and self.spool.pending):
                self.spool.flush()
                self.commits.notify()
            if time.monotonic() - last_retention >= RETENTION_EVERY_S:
                last_retention = time.monotonic()
                self.spool.enforce_retention(self.retention_now_us())

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve and poll until `stop()`."""
        server = make_server(self.spool, self.token, self.health, self.commits, self.sim, self.api)
        await server.start(self.config.host, self.config.port)
        self.port = server.port
        logger.info(
            "agent serving on http://%s:%d (transport %s, spool %s at seq %d)",
            self.config.host, self.port, self.transport.name, self.spool.path,
            self.spool.last_seq,
        )  # fmt: skip
        if ready is not None:
            ready.set()
        committer = asyncio.create_task(self._committer())
        poller = asyncio.create_task(self.poller.run(self._stop))
        try:
            await self._stop.wait()
        finally:
            self._stop.set()
            await asyncio.gather(poller, committer, return_exceptions=True)
            await self.transport.close()
            await server.stop()
            self.spool.close()
            logger.info("agent stopped at seq %d", self.spool.last_seq)

    def stop(self) -> None:
        self._stop.set()
