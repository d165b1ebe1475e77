"""The poller's schedule does not drift, skips what a slow poll covered, and counts it all."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from nilm.records import READING_COLUMNS, Reading
from pi_agent.poller import Poller, TickClock, VirtualClock
from pi_agent.transports import EndOfSimulation, TransportError

STATUS = {name: 1.0 for name in READING_COLUMNS}


class FakeTime:
    """A monotonic clock that only moves when someone sleeps or a poll takes time."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.t += s


class ScriptedMeter:
    """Answers after `durations[i]` seconds; raises where the script says so."""

    name = "fake"

    def __init__(self, time: FakeTime, script: dict[int, Any] | None = None, base: float = 0.05):
        self.time = time
        self.script = script or {}
        self.base = base
        self.asked_at: list[float] = []

    async def connect(self) -> None:
        return None

    async def em_status(self, at: datetime) -> Mapping[str, Any]:
        i = len(self.asked_at)
        self.asked_at.append(self.time.t)
        action = self.script.get(i, self.base)
        if isinstance(action, BaseException):
            raise action
        if isinstance(action, dict):
            return action
        self.time.t += action
        return STATUS

    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {}


class TickStamp(TickClock):
    def __init__(self, period_s: float) -> None:
        self.period_s = period_s
        self.skip_missed = True

    def stamp(self, tick: int) -> datetime:
        return datetime(2026, 1, 5, tzinfo=UTC) + timedelta(seconds=tick)


def run(poller: Poller, ticks: int) -> None:
    asyncio.run(poller.run(max_ticks=ticks))


def test_schedule_is_anchored_so_poll_durations_do_not_accumulate() -> None:
    time = FakeTime()
    meter = ScriptedMeter(time, base=0.3)  # every poll takes 0.3 s
    got: list[Reading] = []
    poller = Poller(meter, got.append, TickStamp(1.0), monotonic=time.monotonic, sleep=time.sleep)
    run(poller, 100)
    starts = [t - 1000.0 for t in meter.asked_at]
    assert starts == [float(k) for k in range(100)]  # 99.0 exactly, not 99 * 1.3
    assert poller.stats.readings == 100 and poller.stats.late == 0 and poller.stats.gaps == 0
    assert [r.ts for r in got][:2] == [TickStamp(1).stamp(0), TickStamp(1).stamp(1)]


def test_a_slow_poll_skips_the_ticks_it_covered_and_counts_a_gap() -> None:
    time = FakeTime()
    meter = ScriptedMeter(time, script={5: 3.5, 12: TransportError("link down")})
    poller = Poller(meter, lambda r: None, TickStamp(1.0), monotonic=time.monotonic,
                    sleep=time.sleep, timeout_s=10.0)  # fmt: skip
    run(poller, 20)
    starts = [round(t - 1000.0, 6) for t in meter.asked_at]
    # The 3.5 s poll from 5.0 covers ticks 6 and 7; tick 8 runs late at 8.5; then back on time.
    assert starts[4:8] == [4.0, 5.0, 8.5, 9.0]
    s = poller.stats
    assert s.skipped == 2 and s.errors == 1 and s.missed == 3 and s.gaps == 2 and s.late == 1
    assert s.polls == 18 and s.readings == 17
    assert s.last_error == "link down"


def test_late_polls_are_counted_when_the_loop_is_held_up() -> None:
    time = FakeTime()

    class Hog(ScriptedMeter):
        async def em_status(self, at: datetime) -> Mapping[str, Any]:
            result = await super().em_status(at)
            if len(self.asked_at) in (3, 7):
                time.t += 0.5  # something else held the loop: the next poll starts late
            return result

    meter = Hog(time, base=0.8)
    poller = Poller(meter, lambda r: None, TickStamp(1.0), monotonic=time.monotonic,
                    sleep=time.sleep)  # fmt: skip
    run(poller, 10)
    assert poller.stats.late == 2 and poller.stats.skipped == 0
    assert abs(poller.stats.max_lateness_ms - 300.0) < 1e-6


def test_timeouts_and_unreadable_answers_are_missed_not_fatal() -> None:
    time = FakeTime()
    meter = ScriptedMeter(time, script={2: {"a_voltage": "x"}})
    poller = Poller(meter, lambda r: None, TickStamp(1.0), monotonic=time.monotonic,
                    sleep=time.sleep)  # fmt: skip
    run(poller, 5)
    assert poller.stats.parse_errors == 1 and poller.stats.readings == 4
    assert "unreadable" in poller.stats.last_error


def test_virtual_clock_catches_up_instead_of_skipping_and_stops_at_the_end() -> None:
    time = FakeTime()
    start = datetime(2026, 1, 5, tzinfo=UTC)
    meter = ScriptedMeter(time, script={3: 0.5, 40: EndOfSimulation("done")}, base=0.0)
    got: list[Reading] = []
    clock = VirtualClock(start, interval_s=1.0, speed=100.0)
    poller = Poller(meter, got.append, clock, monotonic=time.monotonic, sleep=time.sleep)
    asyncio.run(poller.run())
    assert poller.finished and poller.stats.skipped == 0
    assert [r.ts for r in got] == [start + timedelta(seconds=k) for k in range(40)]
    assert poller.stats.late > 0  # the 0.5 s poll made the next ones late, none lost


def test_backfill_takes_the_history_at_once_then_goes_on_in_real_time() -> None:
    time = FakeTime()
    start = datetime(2026, 1, 5, tzinfo=UTC)
    meter = ScriptedMeter(time, base=0.0)
    got: list[Reading] = []
    clock = VirtualClock(start, 1.0, 1.0, backfill_until=start + timedelta(seconds=100))
    poller = Poller(meter, got.append, clock, monotonic=time.monotonic, sleep=time.sleep)
    run(poller, 103)
    starts = [t - 1000.0 for t in meter.asked_at]
    assert starts[:101] == [0.0] * 101 and starts[101:] == [1.0, 2.0]
    assert [r.ts for r in got] == [start + timedelta(seconds=k) for k in range(103)]
    assert poller.stats.late == 0 and poller.stats.missed == 0
