"""Event segmentation through `HomeEventDetector`: the shapes real loads make, and the stream
guarantees (each switch once, whatever the batches, across pickling)."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import numpy as np
import pytest

from nilm.detection import HomeEventDetector
from nilm.records import READING_COLUMNS, Event, ReadingBatch, event_id_for, to_epoch_us
from nilm.segmentation import SegmentationConfig

T0_US = to_epoch_us(datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC))


def make_batch(a: np.ndarray, b: np.ndarray, seed: int = 0, noise_w: float = 1.5) -> ReadingBatch:
    rng = np.random.default_rng(seed)
    n = a.size
    cols = {c: np.full(n, 60.0 if c.endswith("freq") else 120.0) for c in READING_COLUMNS}
    for leg, p in (("a", a), ("b", b)):
        p = p + rng.normal(0.0, noise_w, n)
        cols[f"{leg}_act_power"] = p
        cols[f"{leg}_aprt_power"] = p / 0.9
        cols[f"{leg}_pf"] = np.full(n, 0.9)
        cols[f"{leg}_current"] = p / 0.9 / 120.0
    ts = T0_US + np.arange(n) * 1_000_000 + rng.integers(0, 300_000, n)
    return ReadingBatch("h", np.arange(n), ts.astype(np.int64), cols)


def detect(batch: ReadingBatch, size: int | None = None, **kw: object) -> list[Event]:
    det = HomeEventDetector("h", **kw)  # type: ignore[arg-type]
    size = size or len(batch)
    out: list[Event] = []
    for lo in range(0, len(batch), size):
        out += det.update(batch[lo : lo + size])
    return out + det.flush()


def flat(n: int, level: float) -> np.ndarray:
    return np.full(n, level)


def test_two_stage_soft_start_on_both_legs_is_one_ab_event():
    # an EV charger: 15 % -> 40 % over 5 s, hold 5 s, -> 100 % over 5 s, 3.6 kW a leg
    ramp = np.concatenate([np.linspace(0.15, 0.4, 5), np.full(5, 0.4), np.linspace(0.4, 1, 5)])
    leg = np.concatenate([flat(120, 0.0), 3600 * ramp, flat(200, 3600.0)])
    events = detect(make_batch(200 + leg, 150 + leg))
    assert [(e.legs, round(e.delta_p_w, -2)) for e in events] == [("ab", 7200.0)]
    assert events[0].ts == datetime(2026, 1, 5, 12, 2, 0, tzinfo=UTC)
    assert events[0].ramp_s >= 10


def test_staircase_within_seconds_is_one_event():
    a = np.concatenate([flat(100, 150.0), [250.0, 250.0, 400.0, 400.0, 550.0], flat(100, 550.0)])
    events = detect(make_batch(a, flat(a.size, 90.0)))
    assert [(e.legs, round(e.delta_p_w, -1)) for e in events] == [("a", 400.0)]


def test_inrush_spike_that_settles_is_one_event_with_its_peak():
    a = np.concatenate([flat(100, 160.0), [160 + 4.5 * 125], flat(100, 285.0)])
    events = detect(make_batch(a, flat(a.size, 90.0)))
    assert len(events) == 1
    (e,) = events
    assert e.delta_p_w == pytest.approx(125.0, abs=5.0)
    assert e.inrush_peak_w == pytest.approx(3.5 * 125, abs=10.0)


def test_transient_without_level_change_is_not_an_event():
    a = flat(200, 160.0)
    a[100] = 900.0  # a one-second spike
    a[150:152] = 400.0  # and a two-second one
    assert detect(make_batch(a, flat(200, 90.0))) == []


def test_legs_stepping_a_second_apart_are_one_ab_event():
    a = np.concatenate([flat(100, 150.0), flat(100, 1650.0)])
    b = np.concatenate([flat(101, 90.0), flat(99, 1590.0)])
    events = detect(make_batch(a, b))
    assert [(e.legs, round(e.delta_p_a_w, -1), round(e.delta_p_b_w, -1)) for e in events] == [
        ("ab", 1500.0, 1500.0)
    ]


def test_separate_switches_on_each_leg_stay_separate():
    a = np.concatenate([flat(100, 150.0), flat(200, 400.0)])
    b = np.concatenate([flat(200, 90.0), flat(100, 40.0)])
    events = detect(make_batch(a, b))
    assert [(e.legs, round(e.delta_p_w, -1)) for e in events] == [("a", 250.0), ("b", -50.0)]
    assert events[1].delta_p_a_w == pytest.approx(0.0, abs=3.0)


def test_minimum_event_size_is_configurable():
    a = np.concatenate([flat(100, 150.0), flat(100, 170.0)])
    batch = make_batch(a, flat(200, 90.0), noise_w=0.5)
    assert detect(batch) == []
    (event,) = detect(batch, min_event_w=12.0)
    assert event.delta_p_w == pytest.approx(20.0, abs=2.0)


def test_event_time_and_id_are_the_second_the_step_begins():
    a = np.concatenate([flat(100, 150.0), flat(100, 650.0)])
    (e,) = detect(make_batch(a, flat(200, 90.0)))
    assert e.ts == datetime(2026, 1, 5, 12, 1, 40, tzinfo=UTC)
    assert e.event_id == event_id_for("h", to_epoch_us(e.ts), "a")
    assert e.p_before_w == pytest.approx(150.0, abs=2.0)
    assert e.delta_s_va == pytest.approx(500 / 0.9, rel=0.02)
    assert e.detector == "bocpd"


@pytest.fixture(scope="module")
def sim_day() -> ReadingBatch:
    from nilm import simulator as sim

    batch, _truth = sim.HouseholdSimulator(sim.SimulatorConfig(seed=4)).day(0)
    return batch[batch.seq >= 17 * 3600]  # the busy evening


@pytest.mark.parametrize("detector", ["bocpd", "cusum", "derivative"])
def test_each_event_once_whatever_the_batches(sim_day: ReadingBatch, detector: str):
    whole = detect(sim_day, detector=detector)
    assert len(whole) > 20
    assert len({e.event_id for e in whole}) == len(whole)
    for size in (37, 600):
        assert detect(sim_day, size, detector=detector) == whole


def test_pickled_detector_resumes_with_the_same_events(sim_day: ReadingBatch):
    whole = detect(sim_day)
    det = HomeEventDetector("h")
    out: list[Event] = []
    for lo in range(0, len(sim_day), 1000):
        det = pickle.loads(pickle.dumps(det))
        out += det.update(sim_day[lo : lo + 1000])
    assert out + det.flush() == whole
    assert len(pickle.dumps(det)) < 100_000


def test_config_validation():
    with pytest.raises(ValueError, match="min_event_w"):
        SegmentationConfig(min_event_w=0.0)


def test_simulated_days_precision_and_recall():
    from nilm import simulator as sim
    from nilm.matching import match_events

    batch, truth = sim.HouseholdSimulator(sim.SimulatorConfig(seed=2)).run(2)
    r = match_events(detect(batch, 3600), truth, tolerance_s=2.0, min_w=50.0)
    assert r.n_truth > 200
    # Since the simulator's inrush decays over seconds and TVs, PCs and drums wander (issue 10),
    # precision is 0.81 and recall 0.95 (both were 1.00): the segmenter is to bring them back.
    assert r.precision >= 0.75 and r.recall >= 0.92
    assert r.legs_agree >= 0.97


def test_fridge_steps_under_a_noisy_charger():
    # 50-100 W steps on a leg carrying 3.6 kW with 15 W of noise: no single jump stands out
    from nilm.matching import match_events
    from nilm.simulator import small_steps_under_load

    batch, truth = small_steps_under_load(3.0, seed=8)
    r = match_events(detect(batch), truth, tolerance_s=2.0, min_w=50.0)
    assert r.n_truth >= 20
    assert r.precision >= 0.97 and r.recall >= 0.97
