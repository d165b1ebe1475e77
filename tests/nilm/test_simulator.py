from __future__ import annotations

import numpy as np
import pytest

from nilm.records import to_epoch_us
from nilm.simulator import DEVICES, HouseholdSimulator, SimulatorConfig


@pytest.fixture(scope="module")
def three_days() -> tuple:
    return HouseholdSimulator(SimulatorConfig(seed=11)).run(3)


def _index(batch, ts) -> int:
    return int(np.searchsorted(batch.ts_us, to_epoch_us(ts)))


def test_same_seed_same_household_other_seed_other_household() -> None:
    a, ta = HouseholdSimulator(SimulatorConfig(seed=5)).day(1)
    b, tb = HouseholdSimulator(SimulatorConfig(seed=5)).day(1)
    _, tc = HouseholdSimulator(SimulatorConfig(seed=6)).day(1)
    assert ta == tb and np.array_equal(a.columns["a_act_power"], b.columns["a_act_power"])
    assert ta != tc


def test_batches_of_any_size_give_the_same_readings(three_days) -> None:
    whole, truth = three_days
    sim = HouseholdSimulator(SimulatorConfig(seed=11))
    parts = list(sim.iter_batches(3, batch_s=7_777))
    assert np.array_equal(np.concatenate([b.seq for b, _ in parts]), whole.seq)
    assert [e for _, t in parts for e in t] == truth


def test_every_truth_step_is_visible_in_the_readings(three_days) -> None:
    batch, truth = three_days
    total = batch.columns["a_act_power"] + batch.columns["b_act_power"]
    errors = []
    for event in truth:
        i = _index(batch, event.ts)
        before = np.median(total[max(i - 6, 0) : i - 1])
        after = np.median(total[i + 20 : i + 26]) if event.device == "ev_charger" else np.median(
            total[i + 2 : i + 6]
        )
        errors.append(abs((after - before) - event.delta_p_w) / abs(event.delta_p_w))
    # Another device switching within seconds spoils a few; nearly all steps are exact.
    assert np.mean(np.array(errors) < 0.2) > 0.95


def test_240_volt_loads_step_both_legs_and_120_volt_loads_one(three_days) -> None:
    batch, truth = three_days
    for device, legs in [("water_heater", "ab"), ("fridge", "a"), ("microwave", "b")]:
        event = next(e for e in truth if e.device == device and e.kind == "on")
        assert event.legs == legs
        i = _index(batch, event.ts)
        for leg in "ab":
            p = batch.columns[f"{leg}_act_power"]
            step = np.median(p[i + 2 : i + 6]) - np.median(p[i - 6 : i - 1])
            assert (step > 0.3 * event.delta_p_w / len(legs)) == (leg in legs)


def test_fridge_has_motor_inrush_and_poor_power_factor(three_days) -> None:
    batch, truth = three_days
    on = next(e for e in truth if e.device == "fridge" and e.kind == "on")
    i = _index(batch, on.ts)
    p = batch.columns["a_act_power"]
    base = np.median(p[i - 6 : i - 1])
    assert p[i] - base > 3 * on.delta_p_w  # the spike
    q = np.sqrt(batch.columns["a_aprt_power"] ** 2 - p**2)
    dq = np.median(q[i + 2 : i + 6]) - np.median(q[i - 6 : i - 1])
    assert dq / on.delta_p_w == pytest.approx(0.75, abs=0.1)  # tan(acos 0.8)


def test_ev_charger_soft_start_takes_about_fifteen_seconds() -> None:
    sim = HouseholdSimulator(SimulatorConfig(seed=11))
    for day in range(7):
        batch, truth = sim.day(day)
        on = [e for e in truth if e.device == "ev_charger" and e.kind == "on"]
        if on:
            break
    i = _index(batch, on[0].ts)
    p = batch.columns["a_act_power"] + batch.columns["b_act_power"]
    rise = p[i : i + 25] - np.median(p[i - 6 : i - 1])
    reached = int(np.argmax(rise > 0.95 * on[0].delta_p_w))
    assert 10 <= reached <= 17
    assert 0.3 < rise[6] / on[0].delta_p_w < 0.5  # the first stage holds at 40 %


def test_timestamps_jitter_and_have_gaps(three_days) -> None:
    batch, _ = three_days
    dt = np.diff(batch.ts_us) / 1e6
    assert dt.min() > 0.7 and (dt > 1.5).sum() > 50 and dt.max() <= 9.2
    frac = (batch.ts_us % 1_000_000) / 1e6
    assert 0.0 < frac.mean() < 0.2 and frac.std() > 0.01


def test_novel_device_joins_on_its_day_and_degradation_grows() -> None:
    config = SimulatorConfig(seed=2, novel_device="well_pump", novel_from_day=2,
                             degrade_device="fridge", degrade_from_day=1)  # fmt: skip
    sim = HouseholdSimulator(config)
    devices = [{e.device for e in sim.day(d)[1]} for d in range(3)]
    assert "well_pump" not in devices[0] | devices[1] and "well_pump" in devices[2]
    healthy = HouseholdSimulator(SimulatorConfig(seed=2))
    power = [np.mean([e.delta_p_w for e in s.day(9)[1] if e.device == "fridge" and e.kind == "on"])
             for s in (healthy, sim)]  # fmt: skip
    assert power[1] / power[0] == pytest.approx(1.25, abs=0.01)
    assert "well_pump" not in DEVICES
