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
    p.on_event(lev("base", 0, "a", 70.0, 70.0), None)
    p.on_event(lev("c1", 100, "a", 70.0, 195.0), "fridge")
    # The fridge turns on again from the base: its first run's off was missed, and the leg has
    # room for one fridge only. When it ended is not known: halfway.
    changed = p.on_event(lev("c2", 2100, "a", 70.0, 195.0), "fridge")
    assert [(a.on_event_id, a.end_ts, a.abandoned) for a in changed] == [
        ("c2", None, False),
        ("c1", T0 + timedelta(seconds=1100), False),
    ]
    (run,) = p.on_event(lev("off", 3000, "a", 194.0, 70.0), None)
    assert run.on_event_id == "c2" and run.duration_s == 900.0
    # Runs nobody closes are given up after max_run_s.
    p.on_event(ev("lamp", 3000, "b", 60.0), None)
    gone = p.on_event(ev("later", 7000, "a", 300.0), None)
    assert next((a.on_event_id, a.abandoned) for a in gone) == ("lamp", True)


def test_a_multi_state_device_may_switch_on_again_while_it_runs() -> None:
    """A dishwasher's pump (60 W) runs the whole programme; its heater (2 kW) switches on and
    off under it. The heater's on is no sign that the pump's off was missed."""
    p = Pairer()
    p.on_event(lev("base", 0, "b", 50.0, 50.0), None)
    p.on_event(lev("pump_on", 10, "b", 50.0, 110.0), "dishwasher")
    assert p.on_event(lev("heat_on", 70, "b", 110.0, 2110.0), "dishwasher")[0].end_ts is None
    (heat,) = p.on_event(lev("heat_off", 1600, "b", 2110.0, 112.0), "dishwasher")
    (pump,) = p.on_event(lev("pump_off", 5400, "b", 112.0, 51.0), "dishwasher")
    assert (heat.on_event_id, pump.on_event_id) == ("heat_on", "pump_on")
    assert pump.duration_s == 5390.0


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


def lev(name: str, s: float, legs: str, before_w: float, after_w: float) -> Event:
    """An event with the power its legs draw before and after it, as the detector emits them."""
    dp = after_w - before_w
    dp_a, dp_b = (dp, 0.0) if legs == "a" else (0.0, dp)
    return Event(name, "h", T0 + timedelta(seconds=s), legs, dp, 0.0, dp, 0.0, 0.0, before_w,
                 after_w, dp_a, dp_b, 120.0)  # fmt: skip


def test_a_run_whose_off_was_mismeasured_ends_at_the_drop_that_leaves_no_room_for_it() -> None:
    """A TV switched on at 100 W goes off at 40 W (its picture had dimmed): no match, but the leg
    then draws only its 70 W base, so the TV cannot still be on. Without the floor its run
    stayed open until an unrelated 100 W off hours later."""
    p = Pairer()
    p.on_event(lev("base", 0, "a", 70.0, 70.0), None)
    p.on_event(lev("tv_on", 10, "a", 70.0, 170.0), "tv")
    (run,) = p.on_event(lev("tv_off", 3610, "a", 110.0, 70.0), None)
    assert (run.on_event_id, run.off_event_id, run.end_ts) == (
        "tv_on",
        None,
        T0 + timedelta(seconds=3610),
    )
    assert run.energy_wh == pytest.approx(100.0) and not run.abandoned
    assert p.on_event(lev("lamp_off", 5 * 3600, "a", 170.0, 70.0), None) == []


def test_a_run_hidden_under_a_rise_ends_between_the_last_room_for_it_and_the_rise() -> None:
    p = Pairer()
    p.on_event(lev("base", 0, "b", 50.0, 50.0), None)
    p.on_event(lev("mixer_on", 100, "b", 50.0, 450.0), "mixer")
    p.on_event(lev("fan_on", 200, "b", 450.0, 510.0), "fan")  # both fit: 50 + 400 + 60
    # The mixer's off was missed; the next event on b shows 50 + 60 + 120 W: no room for it.
    changed = p.on_event(lev("lamp_on", 900, "b", 110.0, 230.0), "lamp")
    (mixer,) = [a for a in changed if a.on_event_id == "mixer_on"]
    # It ended between the last event with room for it and this one: halfway.
    assert mixer.end_ts == T0 + timedelta(seconds=550) and mixer.energy_wh == pytest.approx(
        400.0 * 450 / 3600
    )
    assert {a.on_event_id for r in p.open.values() for a in r} == {"fan_on", "lamp_on"}


def test_a_240v_run_counts_on_each_leg_with_its_share() -> None:
    p = Pairer()
    p.on_event(lev("base_a", 0, "a", 60.0, 60.0), None)
    p.on_event(lev("base_b", 0, "b", 60.0, 60.0), None)
    on = Event("dryer_on", "h", T0 + timedelta(seconds=10), "ab", 4000.0, 0.0, 4000.0, 0.0, 0.0,
               120.0, 4120.0, 2000.0, 2000.0, 240.0)  # fmt: skip
    p.on_event(on, "dryer")
    # Leg a still carries its 2 kW share plus a kettle: the dryer stays.
    assert p.on_event(lev("kettle_on", 60, "a", 2060.0, 3560.0), "kettle")[-1].device == "kettle"
    assert len(p.open["ab"]) == 1
    # Leg a back at its base (the dryer's off went unseen): the dryer has ended.
    changed = p.on_event(lev("kettle_off", 300, "a", 3560.0, 60.0), None)
    assert sorted(a.on_event_id for a in changed) == ["dryer_on", "kettle_on"]


def test_pairers_pickled_before_the_floor_still_load() -> None:
    import pickle

    p = Pairer()
    p.on_event(ev("on", 0, "a", 100.0), "fan")
    state = dict(p.__dict__)
    for key in ("leg_power", "last_fit", "recent_levels", "floor_tolerance_w"):
        state.pop(key)
    old = Pairer.__new__(Pairer)
    old.__setstate__(state)
    restored = pickle.loads(pickle.dumps(old))
    (run,) = restored.on_event(ev("off", 60, "a", -100.0), None)
    assert run.on_event_id == "on" and run.energy_wh == pytest.approx(100 / 60)


def test_a_heater_that_sags_under_a_new_step_keeps_its_run() -> None:
    """A washer's heater switches on at 3.5 kW and sags to 1.7 kW before a 1.2 kW element joins:
    the leg then has less room than both on steps ask, but as much as a sagged heater leaves.
    Both keep running; the heater's off (1.7 kW) closes its run, the element's its own."""
    p = Pairer()
    p.on_event(lev("base", 0, "b", 100.0, 100.0), None)
    p.on_event(lev("heat_on", 10, "b", 100.0, 3600.0), "washer")
    changed = p.on_event(lev("element_on", 70, "b", 1800.0, 3000.0), "washer")
    assert [(a.on_event_id, a.end_ts) for a in changed] == [("element_on", None)]
    (heat,) = p.on_event(lev("heat_off", 1570, "b", 3000.0, 1300.0), "washer")
    assert (heat.on_event_id, heat.off_event_id) == ("heat_on", "heat_off")
    (element,) = p.on_event(lev("element_off", 1600, "b", 1300.0, 100.0), "washer")
    assert element.on_event_id == "element_on" and element.duration_s == 1530.0


def test_a_merged_drop_closes_the_runs_that_add_up_to_it_not_a_larger_one() -> None:
    """A heat pump's off (1.65 kW on leg b) lands in the same second as a microwave's (1.15 kW):
    one 2.8 kW drop on b that matches no run. The EV charger (3.6 kW on b) would cover it alone,
    but the heat pump and the microwave add up to it: they are the ones that ended."""
    p = Pairer()
    p.on_event(lev("base", 0, "b", 150.0, 150.0), None)
    ev_on = Event("ev_on", "h", T0 + timedelta(seconds=10), "ab", 7200.0, 0.0, 7200.0, 0.0, 0.0,
                  300.0, 7500.0, 3600.0, 3600.0, 240.0)  # fmt: skip
    hp_on = Event("hp_on", "h", T0 + timedelta(seconds=20), "ab", 3300.0, 0.0, 3300.0, 0.0, 0.0,
                  7500.0, 10800.0, 1650.0, 1650.0, 240.0)  # fmt: skip
    p.on_event(ev_on, "ev_charger")
    p.on_event(hp_on, "heat_pump")
    p.on_event(lev("mw_on", 600, "b", 5400.0, 6550.0), "microwave")
    changed = p.on_event(lev("drop", 700, "b", 6550.0, 3750.0), None)
    assert sorted(a.on_event_id for a in changed) == ["hp_on", "mw_on"]
    assert all(a.end_ts == T0 + timedelta(seconds=700) for a in changed)
    assert [r.on_event_id for r in p.open["ab"]] == ["ev_on"]


def test_a_240v_off_closes_the_one_leg_run_its_on_left() -> None:
    """A stove's on fell in the same second as a kettle's off on leg a, so only its leg-b half
    made an event; its off steps both legs. The off closes that run, at the off, and its leg-a
    part (as large, and no run of its own on leg a) says the stove drew on both legs all along."""
    p = Pairer()
    p.on_event(lev("base", 0, "b", 80.0, 80.0), None)
    p.on_event(lev("stove_b_on", 10, "b", 80.0, 496.0), "stove")
    off = Event("stove_off", "h", T0 + timedelta(seconds=3010), "ab", -830.0, 0.0, -830.0, 0.0,
                0.0, 1010.0, 180.0, -420.0, -410.0, 240.0)  # fmt: skip
    (run,) = p.on_event(off, "stove")
    assert (run.on_event_id, run.off_event_id, run.off_power_w) == (
        "stove_b_on",
        "stove_off",
        830.0,
    )
    assert run.duration_s == 3000.0 and run.legs == "ab"
    assert run.energy_wh == pytest.approx((416.0 + 420.0 + 830.0) / 2 * 3000.0 / 3600.0)
    assert not any(p.open.values())


def test_a_240v_off_over_two_one_leg_runs_closes_each_with_its_part() -> None:
    p = Pairer()
    p.on_event(ev("heater_a", 0, "a", 400.0), "heater")
    p.on_event(ev("lamp_b", 5, "b", 100.0), "lamp")
    off = Event("both_off", "h", T0 + timedelta(seconds=600), "ab", -500.0, 0.0, -500.0, 0.0,
                0.0, 0.0, 0.0, -400.0, -100.0, 240.0)  # fmt: skip
    runs = {a.on_event_id: a for a in p.on_event(off, None)}
    assert runs["heater_a"].off_power_w == 400.0 and runs["heater_a"].legs == "a"
    assert runs["lamp_b"].off_power_w == 100.0 and runs["lamp_b"].legs == "b"


def test_a_240v_off_with_an_unbalanced_other_part_closes_only_its_leg() -> None:
    """A 400 W part on leg b with no run there is no half of a 100 W leg-a run."""
    p = Pairer()
    p.on_event(ev("lamp_a", 0, "a", 100.0), "lamp")
    off = Event("off", "h", T0 + timedelta(seconds=600), "ab", -500.0, 0.0, -500.0, 0.0,
                0.0, 0.0, 0.0, -100.0, -400.0, 240.0)  # fmt: skip
    (run,) = p.on_event(off, None)
    assert (run.legs, run.power_w, run.off_power_w) == ("a", 100.0, 100.0)


def test_the_first_240v_event_takes_its_base_from_the_two_legs() -> None:
    """No 240 V event has been seen yet, so its own levels (both legs, a heater on) would pass
    for the base and leave no room for the heater; the legs' own bases say it still fits."""
    p = Pairer()
    p.on_event(lev("base_a", 0, "a", 60.0, 60.0), None)
    p.on_event(lev("base_b", 0, "b", 60.0, 60.0), None)
    p.on_event(lev("heater_on", 10, "a", 60.0, 1060.0), "heater")
    on = Event("dryer_on", "h", T0 + timedelta(seconds=20), "ab", 4000.0, 0.0, 4000.0, 0.0, 0.0,
               1120.0, 5120.0, 2000.0, 2000.0, 240.0)  # fmt: skip
    assert [a.on_event_id for a in p.on_event(on, "dryer")] == ["dryer_on"]
    assert [r.on_event_id for r in p.open["a"]] == ["heater_on"]
