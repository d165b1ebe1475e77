"""Matching detected events to ground truth."""

from __future__ import annotations

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
