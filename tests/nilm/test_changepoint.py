"""One set of contract checks for every change-point detector, then each one's own behaviour."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from nilm.bocpd import BOCPD
from nilm.changepoint import DETECTORS, ChangePointDetector, DerivativeDetector, make_detector
from nilm.cusum import Cusum


def _steps(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.concatenate([lv + rng.normal(0, 2, 300) for lv in (150.0, 650.0, 160.0, 230.0)])
    b = np.concatenate([lv + rng.normal(0, 2, 400) for lv in (90.0, 1590.0, 95.0)])
    return np.vstack([a, b])


@pytest.mark.parametrize("name", DETECTORS)
def test_contract(name: str):
    x = _steps()
    det = make_detector(name, channels=2)
    assert isinstance(det, ChangePointDetector)
    clone = copy.deepcopy(det)
    whole = [c.tolist() for c in det.update(x)]
    # the steps, each found once, at most `lag` late
    for found, truth in zip(whole, ([300, 600, 900], [400, 800]), strict=True):
        assert len(found) == len(truth)
        assert all(abs(f - t) <= 1 for f, t in zip(found, truth, strict=True))
    # batches do not matter, and a pickled state resumes identically
    parts: list[list[int]] = [[], []]
    for lo in range(0, x.shape[1], 113):
        clone = pickle.loads(pickle.dumps(clone))
        for c, cp in enumerate(clone.update(x[:, lo : lo + 113])):
            assert all(int(v) >= lo - clone.lag for v in cp)
            parts[c] += cp.tolist()
    assert parts == whole


@pytest.mark.parametrize("name", DETECTORS)
def test_flat_noise_has_no_change_points(name: str):
    rng = np.random.default_rng(4)
    det = make_detector(name, channels=1)
    assert det.update(300.0 + rng.normal(0, 2.0, (1, 5000)))[0].tolist() == []


def test_unknown_detector_is_refused():
    with pytest.raises(ValueError, match="unknown detector 'magic'"):
        make_detector("magic", channels=1)


def test_derivative_threshold_and_nan():
    det = DerivativeDetector(channels=1, threshold_w=20.0)
    x = np.array([[5.0, 6.0, np.nan, 60.0, 61.0, 45.0, 10.0]])
    assert det.update(x)[0].tolist() == [3, 6]


def test_cusum_finds_small_step_that_derivative_misses():
    rng = np.random.default_rng(9)
    # a 40 W step in 10 W noise: no single jump is reliable, the sum is
    x = np.concatenate([500 + rng.normal(0, 10, 400), 540 + rng.normal(0, 10, 400)])[None, :]
    (cps,) = Cusum(channels=1, drift_w=20.0, threshold_w=150.0).update(x)
    assert [c for c in cps.tolist() if abs(c - 400) <= 8] and len(cps) <= 2


def test_bocpd_learns_each_segment_noise():
    rng = np.random.default_rng(6)
    # a noisy running load (sd 15 W) must not look like many switches
    x = np.concatenate([160 + rng.normal(0, 1, 300), 560 + rng.normal(0, 15, 600)])[None, :]
    assert BOCPD(channels=1).update(x)[0].tolist() == [300]
