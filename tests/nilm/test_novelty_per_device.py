"""Novelty judged per device: each device's own spread, feature by feature, and not by the hour."""

from __future__ import annotations

import pickle

import numpy as np

from nilm.novelty import NoveltyDetector


def _event(log_p: float, q_ratio: float, hour: float = 12.0, leg: str = "b") -> dict[str, float]:
    angle = 2.0 * np.pi * hour / 24.0
    return {
        "on": 1.0, "log_p": log_p, "q_ratio": q_ratio, "pf_step": 0.7, "inrush": 0.1,
        "ramp": 0.0, "settle": 0.0, "run": 0.0, "leg_a": float(leg == "a"),
        "leg_b": float(leg == "b"), "leg_ab": float(leg == "ab"),
        "tod_sin": float(np.sin(angle)), "tod_cos": float(np.cos(angle)),
    }  # fmt: skip


def _printer_like(detector: NoveltyDetector, seed: int = 0) -> None:
    """A device that steps at several power levels, always with the same reactive share."""
    rng = np.random.default_rng(seed)
    for i in range(12):
        level = (2.3, 2.55, 2.73)[i % 3] + rng.normal(0.0, 0.01)
        detector.learn_label(_event(level, 1.29 + rng.normal(0.0, 0.01)), "printer")


def test_another_reactive_share_at_a_known_power_is_new_for_a_device_that_never_varies_it() -> None:
    per_device = NoveltyDetector(seed=0)
    _printer_like(per_device)
    washer_motor = _event(2.52, 1.0)  # between the printer's levels, another reactive share
    printer_again = _event(2.56, 1.3)
    assert per_device.score_one(washer_motor).novel
    assert not per_device.score_one(printer_again).novel
    # one spread for the whole device lets its power levels hide the reactive share
    whole = NoveltyDetector(seed=0, per_feature=False)
    _printer_like(whole)
    assert per_device.score_one(washer_motor).novelty > whole.score_one(washer_motor).novelty


def test_a_known_device_at_a_new_hour_is_not_new() -> None:
    detector = NoveltyDetector(seed=0)
    _printer_like(detector)
    midnight = detector.score_one(_event(2.55, 1.29, hour=0.0))
    noon = detector.score_one(_event(2.55, 1.29, hour=12.0))
    assert not midnight.novel
    assert abs(midnight.novelty - noon.novelty) < 1e-9


def test_a_snapshot_from_before_per_feature_spreads_loads_and_judges_as_it_did() -> None:
    old = NoveltyDetector(seed=0, per_feature=False, distance_ignores=())
    _printer_like(old)
    state = dict(old.__dict__)
    for gone in ("distance_ignores", "per_feature", "feature_scale", "feature_spread"):
        del state[gone]
    restored = NoveltyDetector.__new__(NoveltyDetector)
    restored.__setstate__(state)
    probe = _event(2.52, 1.0, hour=3.0)
    assert restored.score_one(probe) == old.score_one(probe)
    assert pickle.loads(pickle.dumps(restored)).score_one(probe) == old.score_one(probe)


def _fridge_starts(detector: NoveltyDetector, inrush: float) -> None:
    """A compressor's starts, each labelled with the inrush the meter happened to catch."""
    rng = np.random.default_rng(3)
    for _ in range(10):
        start = _event(1.85 + rng.normal(0.0, 0.01), 0.78 + rng.normal(0.0, 0.01), leg="a")
        detector.learn_label({**start, "inrush": inrush + rng.normal(0.0, 0.02)}, "fridge")


def test_a_start_whose_inrush_fell_between_samples_is_not_new() -> None:
    detector = NoveltyDetector(seed=0)
    _fridge_starts(detector, inrush=3.0)  # every labelled start caught its inrush
    missed = {**_event(1.85, 0.78, leg="a"), "inrush": 0.0}
    assert not detector.score_one(missed).novel


def test_more_inrush_than_any_label_showed_still_counts() -> None:
    detector = NoveltyDetector(seed=0)
    _fridge_starts(detector, inrush=0.0)
    calm = {**_event(1.85, 0.78, leg="a"), "inrush": 0.0}
    surging = {**_event(1.85, 0.78, leg="a"), "inrush": 3.0}
    assert not detector.score_one(calm).novel
    assert detector.score_one(surging).novel
