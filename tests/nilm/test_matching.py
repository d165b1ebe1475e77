"""Matching detected events to ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from nilm.matching import match_events
from nilm.records import TruthEvent

T0 = datetime(2026, 1, 5, 8, 0, 0, tzinfo=UTC)


def ev(seconds: float, dp: float, legs: str = "a") -> TruthEvent:
    return TruthEvent(T0 + timedelta(seconds=seconds), "x", legs, "on" if dp > 0 else "off", dp)


def test_perfect_and_empty():
    truth = [ev(0, 100), ev(60, -100)]
    r = match_events(truth, truth)
    assert (r.precision, r.recall, r.f1, r.true_positives) == (1.0, 1.0, 1.0, 2)
    r = match_events([], truth)
    assert (r.precision, r.recall, r.f1) == (1.0, 0.0, 0.0)


def test_tolerance_is_inclusive_and_one_to_one():
    truth = [ev(10, 500)]
    assert match_events([ev(12, 480)], truth).recall == 1.0
    assert match_events([ev(12.5, 480)], truth).recall == 0.0
    # two detections near one truth: one matches, the other is a false alarm
    r = match_events([ev(9, 500), ev(10.5, 500)], truth)
    assert r.pairs == ((1, 0),) and r.precision == 0.5


def test_closest_pairs_win():
    truth = [ev(10, 200), ev(13, 200)]
    r = match_events([ev(11.5, 200), ev(13.2, 200)], truth, tolerance_s=2.0)
    assert r.pairs == ((0, 0), (1, 1))


def test_direction_must_agree():
    assert match_events([ev(0, -300)], [ev(0, 300)]).recall == 0.0
    assert match_events([ev(0, -300)], [ev(0, 300)], same_sign=False).recall == 1.0


def test_small_events_are_neither_required_nor_penalised():
    truth = [ev(0, 30), ev(100, 52)]
    found = [ev(100, 48), ev(300, 20)]
    r = match_events(found, truth, min_w=50.0)
    assert (r.precision, r.recall, r.n_truth, r.n_detected) == (1.0, 1.0, 1, 0)


def test_legs_agreement_is_reported():
    r = match_events([ev(0, 3000, "a"), ev(50, 100, "b")], [ev(0, 3000, "ab"), ev(50, 100, "b")])
    assert r.legs_agree == pytest.approx(0.5)
    assert r.as_dict()["f1"] == 1.0


@dataclass(frozen=True)
class Ramped:
    ts: datetime
    delta_p_w: float
    legs: str
    ramp_s: float


def ramped(seconds: float, dp: float, ramp_s: float) -> Ramped:
    return Ramped(T0 + timedelta(seconds=seconds), dp, "a", ramp_s)


def test_a_ramp_covers_its_span_widened_by_the_tolerance():
    # a staircase shut-down stamped where it begins; the truth stamped where it reaches zero
    truth = [ev(105, -128)]
    assert match_events([ev(100, -128)], truth).recall == 0.0
    assert match_events([ramped(100, -128, 4.0)], truth).recall == 1.0
    assert match_events([ramped(100, -128, 2.9)], truth).recall == 0.0
    # the span is widened on both sides, not only after its end
    assert match_events([ramped(100, -128, 4.0)], [ev(98, -128)]).recall == 1.0
    assert match_events([ramped(100, -128, 4.0)], [ev(97.5, -128)]).recall == 0.0


def test_a_truth_ramp_is_covered_as_well():
    assert match_events([ev(112, 7000)], [ramped(100, 7000, 10.0)]).recall == 1.0
    assert match_events([ev(112.5, 7000)], [ramped(100, 7000, 10.0)]).recall == 0.0


def test_an_overlapping_span_wins_over_a_nearer_start():
    # the long ramp contains the second truth; the point event sits 1 s from the first truth
    truth = [ev(100, 300), ev(106, 300)]
    found = [ramped(101, 300, 6.0), ev(101, 300)]
    r = match_events(found, truth)
    assert r.pairs == ((0, 1), (1, 0))
