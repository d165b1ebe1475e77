"""The 1 Hz poller: asks the meter on a fixed monotonic schedule and hands on every reading.

Tick `k` is due at `t0 + k * period` on the monotonic clock, so lateness never accumulates: a
slow poll delays that tick only. When a poll overruns whole periods, the ticks it covered are
skipped and counted as missed (a gap), never crammed in afterwards, so readings stay one
period apart. Timestamps come from `TickClock.stamp`: the Pi's UTC wall clock just before the
request is sent, or for the simulator a virtual clock that advances exactly one interval per
tick (the simulator has no lost instants, so there it catches up instead of skipping).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nilm.parsing import ParseError, parse_em_status
from nilm.records import Reading
from pi_agent.transports import EndOfSimulation, Transport, TransportError

__all__ = ["Poller", "PollerStats", "TickClock", "VirtualClock", "WallClock"]

logger = logging.getLogger(__name__)


class TickClock:
    """How long a tick is in real seconds, and what time a tick's reading carries."""

    period_s: float = 1.0
    skip_missed: bool = True
    # Ticks before this one are history to catch up on: polled at once, never counted late.
    backfill_ticks: int = 0

    def stamp(self, tick: int) -> datetime:
        raise NotImplementedError


class WallClock(TickClock):
    """Real time: a reading carries the Pi's UTC clock at the moment it was asked for."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.period_s = interval_s
        self.skip_missed = True

    def stamp(self, tick: int) -> datetime:
        return datetime.now(UTC)


class VirtualClock(TickClock):
    """Simulated time: tick `k` is `start + k * interval_s`, run `speed` times faster than real.

    >>> from datetime import UTC, datetime
    >>> c = VirtualClock(datetime(2026, 1, 5, tzinfo=UTC), interval_s=1.0, speed=100.0)
    >>> c.stamp(90).isoformat(), c.period_s
    ('2026-01-05T00:01:30+00:00', 0.01)

    With `backfill_until`, the ticks before that time are history: the poller takes them at
    once, then goes on at `speed` (at speed 1, in step with the wall clock).
    """

    def __init__(
        self,
        start: datetime,
        interval_s: float = 1.0,
        speed: float = 1.0,
        backfill_until: datetime | None = None,
    ) -> None:
        self.start = start
        self.interval_s = interval_s
        self.period_s = interval_s / speed
        self.skip_missed = False
        if backfill_until is not None and backfill_until > start:
            span = (backfill_until - start).total_seconds()
            self.backfill_ticks = math.ceil(span / interval_s)

    def stamp(self, tick: int) -> datetime:
        return self.start + timedelta(seconds=tick * self.interval_s)


@dataclass(slots=True)
class PollerStats:
    """Counters for /healthz. `missed` counts ticks without a reading; `gaps` runs of them."""

    polls: int = 0
    readings: int = 0
    errors: int = 0
    parse_errors: int = 0
    timeouts: int = 0
    late: int = 0
    skipped: int = 0
    missed: int = 0
    gaps: int = 0
    max_lateness_ms: float = 0.0
    rate_hz: float = 0.0  # readings per second over the last minute of real time
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Poller:
    """Polls `transport` every tick of `clock` and passes each `Reading` to `on_reading`.

    Parameters
    ----------
    transport
        What to ask.
    on_reading
        Called with every reading, in order (the spool's append).
    clock
        The schedule and the timestamps.
    timeout_s
        Longest wait for one answer.
    late_fraction
        A poll that starts this fraction of a period after its due time counts as late.
    """

    def __init__(
        self,
        transport: Transport,
        on_reading: Callable[[Reading], object],
        clock: TickClock,
        timeout_s: float = 2.0,
        late_fraction: float = 0.2,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.transport = transport
        self.on_reading = on_reading
        self.clock = clock
        self.timeout_s = timeout_s
        self.late_fraction = late_fraction
        self.monotonic = monotonic
        self.sleep = sleep
        self.stats = PollerStats()
        self.finished = False
        self._recent: deque[float] = deque()
        self._last_ok_tick = -1

    async def run(self, stop: asyncio.Event | None = None, max_ticks: int | None = None) -> None:
        """Poll until `stop` is set, `max_ticks` ticks have passed or the simulation ends."""
        period = self.clock.period_s
        t0 = self.monotonic()
        tick = 0
        while (stop is None or not stop.is_set()) and (max_ticks is None or tick < max_ticks):
            backlog = self.clock.backfill_ticks
            due = t0 + max(tick - backlog, 0) * period
            now = self.monotonic()
            if tick < backlog:
                await self.sleep(0)  # history: no waiting, never late; let the server run
            elif now < due:
                await self.sleep(due - now)
            else:
                lateness = now - due
                self.stats.max_lateness_ms = max(self.stats.max_lateness_ms, lateness * 1e3)
                if lateness > self.late_fraction * period:
                    self.stats.late += 1
                await self.sleep(0)  # catching up must not starve the server and committer
            if not await self.poll_once(tick):
                break
            tick += 1
            if self.clock.skip_missed:
                behind = math.floor((self.monotonic() - t0) / period) - tick
                if behind > 0:
                    self.stats.skipped += behind
                    self.stats.missed += behind
                    tick += behind
        self.finished = True

    async def poll_once(self, tick: int) -> bool:
        """Poll for tick `tick`; False when there will be no more readings."""
        at = self.clock.stamp(tick)
        self.stats.polls += 1
        try:
            status = await asyncio.wait_for(self.transport.em_status(at), self.timeout_s)
            reading = parse_em_status(status, at)
        except EndOfSimulation as err:
            logger.info("%s; the poller stops", err)
            return False
        except TimeoutError:
            self._failed(tick, "timeout", f"no answer within {self.timeout_s} s")
            self.stats.timeouts += 1
            return True
        except TransportError as err:
            self._failed(tick, "error", str(err))
            return True
        except ParseError as err:
            self.stats.parse_errors += 1
            self._failed(tick, "parse", f"EM.GetStatus result unreadable: {err}")
            return True
        self.on_reading(reading)
        self.stats.readings += 1
        if self._last_ok_tick >= 0 and tick - self._last_ok_tick > 1:
            self.stats.gaps += 1
        self._last_ok_tick = tick
        self._note_rate()
        return True

    def _failed(self, tick: int, kind: str, message: str) -> None:
        self.stats.missed += 1
        if kind != "parse":
            self.stats.errors += 1
        if message != self.stats.last_error:
            logger.warning("poll %d: %s", tick, message)
        self.stats.last_error = message

    def _note_rate(self) -> None:
        now = self.monotonic()
        self._recent.append(now)
        while self._recent and now - self._recent[0] > 60.0:
            self._recent.popleft()
        span = now - self._recent[0]
        self.stats.rate_hz = (len(self._recent) - 1) / span if span > 0 else 0.0
