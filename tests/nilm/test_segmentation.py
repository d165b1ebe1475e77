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
    # With inrush that decays over seconds and TVs, PCs and drums that wander (issue 10) the
    # segmenter scores P 0.99, R 0.97 here (0.81 / 0.95 before it knew these shapes); what it
    # misses are mostly 70-90 W switches on a leg where a PC or TV wanders, and a washer's slow
    # drum changes.
    assert r.precision >= 0.97 and r.recall >= 0.96
    assert r.legs_agree >= 0.97


def test_fridge_steps_under_a_noisy_charger():
    # 50-100 W steps on a leg carrying 3.6 kW with 15 W of noise: no single jump stands out
    from nilm.matching import match_events
    from nilm.simulator import small_steps_under_load

    batch, truth = small_steps_under_load(3.0, seed=8)
    r = match_events(detect(batch), truth, tolerance_s=2.0, min_w=50.0)
    assert r.n_truth >= 20
    assert r.precision >= 0.97 and r.recall >= 0.97


# --- the shapes measured appliances make (issue 10) ---------------------------------------------


def second(e: Event) -> int:
    """Seconds since the trace began."""
    return int(to_epoch_us(e.ts) - T0_US) // 1_000_000


def assert_events(
    events: list[Event], expected: list[tuple[int, str, float]], tol_s: int = 0, rel: float = 0.1
) -> None:
    """Exactly the expected (second, legs, ΔP) in order: within `tol_s` s and `rel` of ΔP."""
    found = [(second(e), e.legs, round(e.delta_p_w)) for e in events]
    assert len(found) == len(expected), found
    for (t, legs, dp), (t_x, legs_x, dp_x) in zip(found, expected, strict=True):
        assert abs(t - t_x) <= tol_s and legs == legs_x, found
        assert dp == pytest.approx(dp_x, rel=rel), found


def test_decaying_compressor_start_is_one_event_with_its_decay():
    # a ~76 W fridge: 884 -> 305 -> 141 -> 94 -> 80 -> 76 W at 1 Hz, on a leg carrying 150 W
    start = np.array([884.0, 305.0, 141.0, 94.0, 80.0])
    a = np.concatenate([flat(100, 150.0), 150 + start, flat(300, 226.0), flat(100, 150.0)])
    events = detect(make_batch(a, flat(a.size, 90.0)))
    assert_events(events, [(100, "a", 76.0), (405, "a", -76.0)])
    on = events[0]
    assert on.inrush_peak_w == pytest.approx(884 - 76, abs=15)
    # (305 - 76) / 808 of the excess is left one sample after the peak, (94 - 76) / 808 three
    # samples after; the ratios are read at 1 and 3 s of the timestamps, which jitter by 0.3 s
    assert 0.2 < on.extra["inrush_ratio_1s"] < 0.45
    assert on.extra["inrush_ratio_3s"] < 0.1 and on.extra["inrush_ratio_5s"] < 0.05
    assert 0.5 < on.extra["inrush_tau_s"] < 1.3
    assert on.ramp_s <= 1.5  # the decay is not a ramp
    assert "inrush_tau_s" not in events[1].extra


def test_slow_inrush_decay_is_one_event():
    # a well pump: 700 W of inrush decaying with a 2.5 s time constant to 95 W
    t = np.arange(15.0)
    a = np.concatenate([flat(100, 150.0), 245 + 700 * np.exp(-t / 2.5), flat(300, 245.0)])
    (on,) = detect(make_batch(a, flat(a.size, 90.0)))
    assert second(on) == 100
    assert on.delta_p_w == pytest.approx(95.0, rel=0.15)
    assert on.extra["inrush_tau_s"] == pytest.approx(2.5, abs=0.7)


def test_step_after_a_steady_on_is_not_taken_for_a_decay():
    # 500 W on (one second of inrush), 4 s later another load on the leg switches off (-60 W)
    a = np.concatenate([flat(100, 150.0), [1500.0], flat(4, 650.0), flat(200, 590.0)])
    events = detect(make_batch(a, flat(a.size, 90.0)))
    assert_events(events, [(100, "a", 500.0), (105, "a", -60.0)])


def test_a_pulse_that_holds_then_drops_is_two_switches_not_a_decay():
    # a washer's heater on for 3 s (its draw climbing a little), then off through a sample caught
    # mid-switch: ANTgen's h1 at 2026-02-04 15:00:53 (760 -> 1084 1103 1126 -> 961 -> 806 W)
    a = np.concatenate(
        [flat(100, 760.0), [1084.0, 1103.0, 1126.0, 961.0], flat(200, 806.0), flat(100, 480.0)]
    )
    events = detect(make_batch(a, flat(a.size, 480.0)))
    assert_events(events, [(100, "a", 330.0), (103, "a", -310.0), (304, "a", -326.0)], 1, 0.15)


def test_a_rise_while_an_inrush_decays_is_the_next_switch():
    # a 240 V heat pump starts with an inrush decaying over 7 s; 8 s in, a water heater starts
    decay = 1900 + 1600 * np.exp(-np.arange(8.0) / 1.5)
    total = np.concatenate([flat(100, 0.0), decay, flat(300, 1900.0 + 4500.0), flat(100, 0.0)])
    events = detect(make_batch(270 + total / 2, 330 + total / 2))
    # the heat pump's level is read before its inrush has settled (the next switch cuts it)
    assert_events(
        events, [(100, "ab", 2100.0), (108, "ab", 4500.0), (408, "ab", -6400.0)], rel=0.15
    )


def test_a_switch_right_after_the_leg_wandered_the_other_way_is_found():
    # a TV's picture moves leg a by ±15 W; 8 s after it brightens by 45 W, a fridge on the
    # same leg stops (-95 W): the minute before the step sits mostly at the darker level
    rng = np.random.default_rng(5)
    n = 400
    a = 310 + tv_wander(n, rng, 15.0)
    a[192:] += np.r_[np.linspace(11, 45, 4), flat(n - 196, 45.0)]
    a[200:] -= 95.0
    events = detect(make_batch(a, flat(n, 380.0), seed=5))
    assert [(second(e), e.legs) for e in events if abs(e.delta_p_w) >= 50] == [(200, "a")]


def tv_wander(n: int, rng: np.random.Generator, amp_w: float) -> np.ndarray:
    """A picture's brightness: a new level within ±amp_w every 2-8 s, reached over 1-2 s."""
    out = np.empty(n)
    level, i = 0.0, 0
    while i < n:
        hold = int(rng.integers(2, 9))
        new = rng.uniform(-amp_w, amp_w)
        k = min(int(rng.integers(1, 3)), n - i)
        out[i : i + k] = np.linspace(level, new, k + 1)[1:]
        out[i + k : i + hold] = new
        level, i = new, i + hold
    return out


def test_wandering_tv_makes_no_events_beside_a_steady_fridge():
    # leg b: a 150 W TV whose draw moves ±30 W with the picture for 13 minutes, while a 125 W
    # fridge runs from 200 s to 600 s on the same leg
    rng = np.random.default_rng(3)
    n = 900
    tv = np.zeros(n)
    tv[60:840] = 150 + tv_wander(780, rng, 30.0)
    fridge = np.zeros(n)
    fridge[200:600] = 125.0
    events = detect(make_batch(flat(n, 85.0), 60 + tv + fridge, seed=3))
    # the TV's steps are its draw of the moment, 150 W ± 30 W; a move of the picture in the same
    # seconds as the fridge's step joins it (stamped where that move began, within ±2 s)
    assert_events(
        events, [(60, "b", 150), (200, "b", 125), (600, "b", -150), (840, "b", -150)], 2, 0.4
    )


def test_small_switch_on_a_quiet_leg_is_still_found_beside_a_wandering_leg():
    rng = np.random.default_rng(4)
    n = 600
    b = 60 + 150 + tv_wander(n, rng, 30.0)
    a = np.concatenate([flat(300, 85.0), flat(300, 125.0)])  # a 40 W lamp
    events = detect(make_batch(a, b, seed=4))
    assert_events([e for e in events if "a" in e.legs], [(300, "a", 40.0)])


def test_staircase_shut_down_is_one_event_that_covers_the_truth_at_its_end():
    from nilm.matching import match_events
    from nilm.records import TruthEvent, from_epoch_us

    # 128 -> 96 -> 80 -> 32 -> 0 W over 5 s
    a = np.concatenate([flat(100, 150.0 + 128), 150 + np.array([96.0, 80.0, 32.0]), flat(100, 150)])
    events = detect(make_batch(a, flat(a.size, 90.0)))
    assert_events(events, [(100, "a", -128.0)])
    assert events[0].ramp_s >= 2.5
    # a sub-metered truth stamps it where the appliance's own trace reaches zero
    end = [TruthEvent(from_epoch_us(T0_US + 103_500_000), "fan", "a", "off", -128.0)]
    assert match_events(events, end).recall == 1.0


def washer_programme() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Leg b of a washer: its drum turns (250 W, churning ±20 W) and pauses, and its 2 kW heater
    switches twice while the drum moves. Returns the power and the (second, watts) of each
    state change."""
    rng = np.random.default_rng(11)
    n = 900
    drum = np.zeros(n)
    drum[60:300] = 250.0
    drum[308:800] = 250.0
    drum += np.where(drum > 0, np.repeat(rng.uniform(-20, 20, n // 3), 3), 0.0)
    drum[60] = drum[308] = 600.0  # the motor's inrush
    heater = np.zeros(n)
    heater[200:380] = 2000.0
    heater[500:620] = 2000.0
    changes = [(60, 250), (200, 2000), (300, -250), (308, 250), (380, -2000), (500, 2000),
               (620, -2000), (800, -250)]  # fmt: skip
    return 60 + drum + heater, changes


def test_washer_heating_between_drum_movements_each_change_is_an_event():
    b, changes = washer_programme()
    events = detect(make_batch(flat(b.size, 85.0), b, seed=11))
    assert_events(events, [(t, "b", dp) for t, dp in changes])


def test_dryer_heater_cycling_under_its_motor():
    # the motor (leg a, 260 W) turns all along; the 240 V heater (2.5 kW a leg) cycles, starting
    # in the same second as the motor
    a = np.zeros(1200)
    heater = np.zeros(1200)
    a[100:1100] = 260.0
    for on, off in ((100, 400), (460, 700), (760, 1000)):
        heater[on:off] = 2500.0
    events = detect(make_batch(85 + a + heater, 60 + heater))
    heater = [(t, "ab", dp) for t, dp in ((400, -5000), (460, 5000), (700, -5000), (760, 5000))]
    assert_events(events, [(100, "ab", 5260.0), *heater, (1000, "ab", -5000), (1100, "a", -260)])


def test_microwave_at_partial_power_each_magnetron_switch_is_an_event():
    b = np.zeros(300)
    b[50:250] = 100.0  # fan and light
    for on in range(60, 240, 30):
        b[on : on + 12] += 1150.0  # the magnetron, 12 s in every 30
    events = detect(make_batch(flat(300, 85.0), 60 + b))
    cycles = [(t, "b", dp) for on in range(60, 240, 30) for t, dp in ((on, 1150), (on + 12, -1150))]
    assert_events(events, [(50, "b", 100), *cycles, (250, "b", -100)])


def test_two_appliances_switching_in_the_same_second_on_different_legs():
    # a fridge (125 W) on leg a and a microwave (1250 W) on leg b, both at 100 s: two events,
    # not one 240 V switch
    a = np.concatenate([flat(100, 85.0), flat(200, 210.0)])
    b = np.concatenate([flat(100, 60.0), flat(150, 1310.0), flat(50, 60.0)])
    events = detect(make_batch(a, b))
    assert_events(events, [(100, "a", 125.0), (100, "b", 1250.0), (250, "b", -1250.0)])


def test_an_inrush_whose_fading_draw_wanders_a_little_is_still_one_event():
    # a vacuum: its universal motor's inrush fades over ~6 s while its draw already moves with
    # the floor (1207 -> 1218 W); the fall that follows is the rest of the decay, not an off
    start = np.array([1985.0, 1567, 1345, 1252, 1194, 1150, 1159, 1132, 1122, 1134, 1128, 1121])
    b = np.concatenate([flat(100, 57.0), 57 + start, flat(200, 57.0 + 1125.0), flat(100, 57.0)])
    events = detect(make_batch(flat(b.size, 85.0), b))
    assert_events(events, [(100, "b", 1125.0), (312, "b", -1125.0)])


def test_a_heater_that_sagged_a_little_then_held_and_stepped_down_switched_twice():
    # a coffee maker: 1620 W sagging by 140 W over 5 s, holding, then its element stepping
    # down by 690 W 8 s after the start: a sag is no inrush, so the step down is its own
    heat = np.array([1620.0, 1580, 1550, 1515, 1480, 1482, 1481, 1484])
    b = np.concatenate([flat(100, 148.0), 148 + heat, flat(200, 148.0 + 1484 - 690)])
    events = detect(make_batch(flat(b.size, 85.0), b))
    assert_events(events, [(100, "b", 1480.0), (108, "b", -690.0)], tol_s=1, rel=0.12)


def test_a_washer_spinning_up_slowly_under_its_wander_is_one_event():
    # the drum tumbles at ~150 W, swinging +/-35 W every few seconds; its spin climbs 300 W
    # over 40 s (7.5 W/s) under the same swings: no single move is a switch, the slide is one
    rng = np.random.default_rng(4)
    n = 400
    swing = np.repeat(rng.uniform(-35.0, 35.0, n // 4 + 1), 4)[:n]
    level = np.concatenate([flat(150, 150.0), np.linspace(150.0, 450.0, 40), flat(210, 450.0)])
    b = 60.0 + level + swing
    # (the first swings, before the leg has any history of wandering, may pass for switches)
    events = [e for e in detect(make_batch(flat(n, 85.0), b)) if second(e) >= 60]
    assert len(events) == 1, [(second(e), e.legs, round(e.delta_p_w)) for e in events]
    (spin,) = events
    assert spin.legs == "b" and 150.0 <= spin.delta_p_w <= 400.0
    assert 150 <= second(spin) <= 190  # within the climb


def test_the_rest_of_a_spin_up_after_its_slide_was_found_is_no_second_event():
    # the spin climbs 250 W over 36 s under the drum's swings, then its last 90 W over two
    # samples: the slide is found mid-climb, and the two-sample climb that ends it is its rest
    rng = np.random.default_rng(1)
    n = 400
    swing = np.repeat(rng.uniform(-35.0, 35.0, n // 4 + 1), 4)[:n]
    level = np.concatenate(
        [flat(150, 150.0), np.linspace(150.0, 400.0, 36), [445.0], flat(213, 490.0)]
    )
    events = [e for e in detect(make_batch(flat(n, 85.0), 60.0 + level + swing)) if second(e) >= 60]
    assert [(e.legs, e.delta_p_w > 150.0) for e in events] == [("b", True)], [
        (second(e), round(e.delta_p_w)) for e in events
    ]


def test_a_compressor_start_and_a_soft_start_in_the_same_second_are_two_events():
    # a fridge (+95 W, its inrush 9x) on leg a and a TV (+140 W over 2 s) on leg b start in
    # the same second: comparable steps, but only one of them overshoots, so not one 240 V load
    inrush = 95.0 * np.array([9.0, 3.4, 1.6, 1.15, 1.03])
    a = np.concatenate([flat(100, 85.0), 85 + inrush, flat(200, 180.0)])
    b = np.concatenate([flat(100, 60.0), [107.0, 153.0], flat(203, 200.0)])
    events = detect(make_batch(a, b))
    assert_events(events, [(100, "a", 95.0), (100, "b", 140.0)], rel=0.15)


def test_a_240_volt_motor_start_overshoots_alike_on_both_legs_and_is_one_event():
    # a well pump: 1 kW over both legs, 3.5x inrush decaying over a few seconds
    start = 500.0 * np.array([3.5, 2.1, 1.4, 1.1, 1.02])
    a = np.concatenate([flat(100, 85.0), 85 + start, flat(200, 585.0)])
    b = np.concatenate([flat(100, 60.0), 60 + start, flat(200, 560.0)])
    events = detect(make_batch(a, b))
    assert_events(events, [(100, "ab", 1000.0)])


def test_bursts_of_a_pc_make_no_events_and_a_compressor_start_among_them_is_found():
    # leg a: a PC idling at 150 W with bursts of work (+30-60 W for 3-10 s) for 20 minutes; a
    # fridge starts (9x inrush decaying to 95 W) in the middle of it
    rng = np.random.default_rng(7)
    n = 1500
    pc = np.zeros(n)
    t = 60
    while t < n - 60:
        idle, burst = int(rng.integers(3, 15)), int(rng.integers(3, 11))
        pc[t + idle : t + idle + burst] = rng.uniform(30.0, 60.0)
        t += idle + burst
    pc[60 : n - 60] += 150.0
    fridge = np.zeros(n)
    fridge[700:] = 95.0
    fridge[700:705] += np.array([760.0, 200.0, 55.0, 20.0, 5.0])
    events = detect(make_batch(85 + pc + fridge, flat(n, 60.0), seed=7))
    big = [e for e in events if abs(e.delta_p_w) >= 50]
    assert [(second(e), e.legs, e.is_on) for e in big if abs(second(e) - 700) <= 2] == [
        (700, "a", True)
    ]
    # the PC's own switch on and off may carry a burst; nothing else is an event
    assert [second(e) for e in big if abs(second(e) - 700) > 2] == [60, n - 60]


def test_a_step_after_a_gap_in_the_readings_spans_the_gap():
    # the logger missed 8 s, during which a 500 W load switched on
    a = np.concatenate([flat(100, 150.0), flat(100, 650.0)])
    batch = make_batch(a, flat(a.size, 90.0))
    keep = np.ones(a.size, bool)
    keep[92:100] = False
    (e,) = detect(batch[keep])
    assert second(e) == 92  # the second after the last reading before the gap
    assert e.ramp_s >= 7.5  # it happened somewhere in the gap
    assert e.delta_p_w == pytest.approx(500.0, rel=0.02)


def test_kettle_second_element_after_a_held_first_is_a_switch_of_its_own():
    # ANTgen's kettle (h3): +580 W held steady for 3 s, then +1416 W; its truth has two events
    a = np.concatenate([flat(100, 108.0), flat(3, 688.0), flat(200, 2104.0), flat(100, 108.0)])
    events = detect(make_batch(a, flat(a.size, 60.0)))
    assert_events(events, [(100, "a", 580.0), (103, "a", 1416.0), (303, "a", -1996.0)])


def test_a_climb_held_for_two_seconds_still_chains():
    # a hold of 2 s is a staircase (the truth joins changes within 2 s of each other)
    a = np.concatenate([flat(100, 108.0), flat(2, 688.0), flat(200, 2104.0)])
    events = detect(make_batch(a, flat(a.size, 60.0)))
    assert_events(events, [(100, "a", 1996.0)])
    assert events[0].ramp_s >= 1.5


def test_an_inrush_held_two_samples_then_one_fall_is_one_event():
    # ANTgen's fridge (h2): 69 -> 530 -> 620 -> 125 W, then running at +57 W
    b = np.concatenate([flat(100, 69.0), [530.0, 620.0], flat(300, 126.0), flat(100, 69.0)])
    events = detect(make_batch(flat(b.size, 90.0), b))
    assert_events(events, [(100, "b", 57.0), (402, "b", -57.0)], rel=0.15)
    assert events[0].inrush_peak_w == pytest.approx(620 - 126, abs=20)


def test_a_load_that_runs_two_seconds_at_its_level_then_another_stops_is_two_events():
    # 500 W on with a one-sample inrush, and 2 s after it settles another load stops (-60 W):
    # the fall is no inrush ending, for the level it leaves is the new load's
    a = np.concatenate([flat(100, 150.0), [1500.0], flat(2, 650.0), flat(200, 590.0)])
    events = detect(make_batch(a, flat(a.size, 90.0)))
    assert_events(events, [(100, "a", 500.0), (103, "a", -60.0)], tol_s=1)


def test_a_burst_that_decays_back_to_its_level_is_no_event():
    # ANTgen's PC (h1): 152 -> 287 -> 230 -> 201 -> 177 -> 172 -> 164 -> ... -> 154 W
    burst = np.array([287.0, 230, 201, 177, 172, 164, 163, 157, 156, 154])
    b = np.concatenate([flat(100, 152.0), burst, flat(200, 152.0)])
    assert [e for e in detect(make_batch(flat(b.size, 90.0), b)) if abs(e.delta_p_w) >= 30] == []


def test_a_pulse_that_sags_while_it_runs_is_two_switches():
    # ANTgen's printer (h4): on at 369 W sagging to 352 W over 10 s, then off
    pulse = np.linspace(365.0, 352.0, 10)
    b = np.concatenate([flat(100, 75.0), 75 + pulse, [230.0], flat(200, 75.0)])
    events = detect(make_batch(flat(b.size, 90.0), b))
    assert_events(events, [(100, "b", 360.0), (110, "b", -350.0)], tol_s=1, rel=0.1)


def test_two_heavy_loads_switching_off_four_seconds_apart_are_two_events():
    # the simulator's seed 2: a heat pump steps down 3.3 kW, 4 s later a water heater (4.4 kW)
    # stops; both 240 V, and a 2.4 kW leg moves by 15 W from second to second
    rng = np.random.default_rng(2)
    total = np.concatenate([flat(100, 7800.0), flat(4, 4540.0), flat(200, 180.0)])
    wobble = rng.normal(0.0, 5.0, total.size)
    events = detect(make_batch(100 + total / 2 + wobble, 80 + total / 2 - wobble))
    assert_events(events, [(100, "ab", -3260.0), (104, "ab", -4360.0)], rel=0.05)


def test_a_magnetron_after_a_slow_rise_of_fan_and_lamp_is_a_switch_of_its_own():
    # ANTgen's microwave (h2): 90 -> 121 198 245 279 305 326 W over 6 s, then 1431 W at once
    rise = np.array([121.0, 198, 245, 279, 305, 326])
    a = np.concatenate([flat(100, 90.0), rise, flat(200, 1431.0), flat(100, 90.0)])
    events = detect(make_batch(a, flat(a.size, 60.0)))
    assert_events(events, [(100, "a", 156.0), (106, "a", 1105.0), (306, "a", -1341.0)], 1, 0.3)


def test_an_ev_charger_two_stage_start_stays_one_event():
    # the jump rule must not split a soft start that climbs in two ramps (15 % -> 40 %, hold,
    # 40 % -> 100 %), however steep its second ramp
    ramp = np.concatenate([np.linspace(0.15, 0.4, 5), np.full(5, 0.4), np.linspace(0.6, 1, 3)])
    leg = np.concatenate([flat(120, 0.0), 3600 * ramp, flat(200, 3600.0)])
    events = detect(make_batch(200 + leg, 150 + leg))
    assert [(e.legs, round(e.delta_p_w, -2)) for e in events] == [("ab", 7200.0)]


def test_a_two_stage_soft_start_beside_a_wandering_tv_is_one_event():
    # the simulator's seed 3: an EV charger climbs to 40 %, holds 5 s and climbs on, while a
    # TV's picture moves leg b: its climbs are no wander, so they chain on both legs
    rng = np.random.default_rng(6)
    n = 900
    tv = 150 + tv_wander(n, rng, 30.0)
    ramp = np.concatenate([np.linspace(0.15, 0.4, 5), np.full(5, 0.4), np.linspace(0.4, 1, 5)])
    leg = np.concatenate([flat(700, 0.0), 3600 * ramp, flat(n - 715, 3600.0)])
    events = detect(make_batch(200 + leg, 60 + tv + leg, seed=6))
    big = [(second(e), e.legs, round(e.delta_p_w, -2)) for e in events if e.delta_p_w >= 1000]
    assert big == [(700, "ab", 7200.0)]
