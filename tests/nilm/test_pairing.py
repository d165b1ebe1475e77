"""On/off pairing: overlap, sag, leg sets, missed offs, and the daily energy breakdown."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from nilm.pairing import Pairer, always_on_base_w, daily_breakdown, energy_by_device_day
from nilm.records import Event

T0 = datetime(2026, 1, 5, 18, tzinfo=UTC)


def ev(name: str, s: float, legs: str, dp: float) -> Event:
    return Event(name, "h", T0 + timedelta(seconds=s), legs, dp, 0.0, dp, 0.0, 0.0, 0.0, 0.0,
                 dp, 0.0, 120.0)  # fmt: skip


def test_an_off_closes_the_run_it_matches_even_when_runs_overlap() -> None:
    p = Pairer()
    p.on_event(ev("heater_on", 0, "a", 1500.0), None)
    p.on_event(ev("lamp_on", 10, "a", 60.0), None)
    closed = p.on_event(ev("heater_off", 300, "a", -1420.0), None)
    assert [(a.on_event_id, a.off_event_id) for a in closed] == [("heater_on", "heater_off")]
    closed = p.on_event(ev("lamp_off", 400, "a", -61.0), None)
    assert [a.on_event_id for a in closed] == ["lamp_on"]
    assert closed[0].duration_s == 390.0


def test_a_sagging_heater_is_still_paired() -> None:
    """The real recording: +492 W on, -288 W off a hundred seconds later (its draw sagged)."""
    p = Pairer()
    p.on_event(ev("on", 0, "a", 492.0), None)
    (run,) = p.on_event(ev("off", 102, "a", -288.0), None)
    assert run.on_event_id == "on"
    assert run.energy_wh == pytest.approx(102 / 3600 * (492 + 288) / 2)


def test_leg_sets_are_kept_apart_and_too_different_steps_do_not_pair() -> None:
    p = Pairer()
    p.on_event(ev("dryer_on", 0, "ab", 5000.0), "dryer")
    p.on_event(ev("motor_on", 0, "a", 260.0), "dryer")
    assert p.on_event(ev("b_off", 60, "b", -250.0), None) == []
    assert p.on_event(ev("small_off", 60, "ab", -900.0), None) == []
    (run,) = p.on_event(ev("motor_off", 120, "a", -255.0), None)
    assert run.on_event_id == "motor_on"


def test_device_agreement_breaks_ties_and_recent_runs_win_among_equals() -> None:
    p = Pairer()
    p.on_event(ev("tv_on", 0, "b", 150.0), "tv")
    p.on_event(ev("fan_on", 5, "b", 150.0), "fan")
    (run,) = p.on_event(ev("tv_off", 60, "b", -150.0), "tv")
    assert run.on_event_id == "tv_on"
    p.on_event(ev("x1", 100, "b", 150.0), None)
    p.on_event(ev("x2", 200, "b", 150.0), None)
    (run,) = p.on_event(ev("x_off", 300, "b", -150.0), None)
    assert run.on_event_id == "x2"


def test_a_missed_off_does_not_make_a_run_of_two_cycles() -> None:
    p = Pairer(max_run_s=3600)
    p.on_event(ev("c1", 0, "a", 125.0), "fridge")
    # The fridge turns on again: its first run's off was missed, so that run is abandoned.
    changed = p.on_event(ev("c2", 2000, "a", 125.0), "fridge")
    assert [(a.on_event_id, a.abandoned) for a in changed] == [("c1", True), ("c2", False)]
    (run,) = p.on_event(ev("off", 2900, "a", -124.0), None)
    assert run.on_event_id == "c2" and run.duration_s == 900.0
    # Runs nobody closes are given up after max_run_s.
    p.on_event(ev("lamp", 3000, "b", 60.0), None)
    gone = p.on_event(ev("later", 7000, "a", 300.0), None)
    assert next((a.on_event_id, a.abandoned) for a in gone) == ("lamp", True)


def test_daily_breakdown_splits_metered_energy() -> None:
    p = Pairer()
    runs = []
    runs += p.on_event(ev("oven_on", 0, "ab", 3000.0), "oven")
    runs += p.on_event(ev("oven_off", 3600, "ab", -2900.0), "oven")
    closed = [r for r in runs if r.energy_wh is not None]
    assert energy_by_device_day(closed) == {(date(2026, 1, 5), "oven"): pytest.approx(2950.0)}
    base = always_on_base_w([145.0] * 500 + [3145.0] * 60)
    assert base == 145.0
    (day,) = daily_breakdown(closed, {date(2026, 1, 5): 8000.0}, {date(2026, 1, 5): base})
    assert day.base_wh == 145.0 * 24
    assert day.unexplained_wh == pytest.approx(8000.0 - 3480.0 - 2950.0)
