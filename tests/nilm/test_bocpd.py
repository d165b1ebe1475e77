"""BOCPD: the bounded, absorbing posterior against an exact reference, and its decisions."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from nilm import bocpd
from nilm.bocpd import BOCPD, BocpdPrior, _vexp_sum, _vlog


def reference_posterior(
    x: np.ndarray, prior: BocpdPrior, hazard: float
) -> list[np.ndarray]:
    """Adams & MacKay's recursion, untruncated, in plain Python with math.lgamma.

    Returns P(r_t = r | x_1..t) for every t, r = 0..t.
    """
    lp = [0.0]  # log P(r_0 = 0) = 0
    mu = [prior.mu0]
    kappa = [prior.kappa0]
    alpha = [prior.alpha0]
    beta = [prior.beta0]
    out = []
    for xt in x:
        logpred = []
        for m, k, a, b in zip(mu, kappa, alpha, beta, strict=True):
            nu = 2 * a
            scale2 = b * (k + 1) / (a * k)
            z = (xt - m) ** 2 / (nu * scale2)
            logpred.append(
                math.lgamma((nu + 1) / 2)
                - math.lgamma(nu / 2)
                - 0.5 * math.log(nu * math.pi * scale2)
                - (nu + 1) / 2 * math.log1p(z)
            )
        joint = [p + q for p, q in zip(lp, logpred, strict=True)]
        top = max(joint)
        evidence = top + math.log(sum(math.exp(j - top) for j in joint))
        lp = [math.log(hazard)] + [j - evidence + math.log1p(-hazard) for j in joint]
        new_mu = [prior.mu0]
        new_kappa = [prior.kappa0]
        new_alpha = [prior.alpha0]
        new_beta = [prior.beta0]
        for m, k, a, b in zip(mu, kappa, alpha, beta, strict=True):
            new_mu.append((k * m + xt) / (k + 1))
            new_kappa.append(k + 1)
            new_alpha.append(a + 0.5)
            new_beta.append(b + k * (xt - m) ** 2 / (2 * (k + 1)))
        mu, kappa, alpha, beta = new_mu, new_kappa, new_alpha, new_beta
        out.append(np.exp(np.array(lp)))
    return out


def test_fast_log_and_exp_match_libm():
    rng = np.random.default_rng(1)
    y = rng.uniform(-700.0, 0.0, 4096)
    out = np.empty_like(y)
    bits = np.empty(y.size, np.int64)
    total = _vexp_sum(y, -1.0, out, bits)
    np.testing.assert_allclose(out, np.exp(y + 1.0), rtol=1e-13)
    assert total == pytest.approx(np.exp(y + 1.0).sum(), rel=1e-12)
    x = np.exp(rng.uniform(-60.0, 60.0, 4096))
    _vlog(x, out, bits)
    np.testing.assert_allclose(out, np.log(x), rtol=0, atol=1e-13)


def test_posterior_matches_untruncated_reference():
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [150 + rng.normal(0, 2, 60), 650 + rng.normal(0, 6, 50), 160 + rng.normal(0, 2, 40)]
    )
    prior = BocpdPrior(noise_w=2.0)
    hazard = 1 / 250
    det = BOCPD(channels=1, max_run=200, hazard=hazard, prior=prior)
    ref = reference_posterior(x, prior, hazard)
    worst = 0.0
    for t, xt in enumerate(x):
        det.update(np.array([[xt]]))
        ours = det.posterior(0)
        exact = ref[t]
        assert ours.shape[0] > exact.shape[0]  # no truncation yet
        worst = max(worst, float(np.max(np.abs(ours[: exact.size] - exact))))
        assert float(ours[exact.size :].sum()) < 1e-12
    assert worst < 1e-9


def test_absorbing_bound_gives_no_false_change_point_on_long_flat_segment():
    rng = np.random.default_rng(3)
    x = 420.0 + rng.normal(0.0, 2.0, 10_000)
    det = BOCPD(channels=1, max_run=300)
    (cps,) = det.update(x[None, :])
    assert cps.tolist() == []
    # the long run has all its mass in the last (absorbing) bin, not spread or lost
    assert det.posterior(0)[-1] > 0.99


def test_finds_steps_within_lag_and_places_them_exactly():
    rng = np.random.default_rng(5)
    levels = [100.0, 225.0, 170.0, 1500.0, 160.0]
    x = np.concatenate([lv + rng.normal(0, 2.0, 400) for lv in levels])
    det = BOCPD(channels=1, max_run=300)
    (cps,) = det.update(x[None, :])
    assert cps.tolist() == [400, 800, 1200, 1600]


def test_channels_are_independent_and_batches_do_not_matter():
    rng = np.random.default_rng(11)
    a = np.concatenate([200 + rng.normal(0, 2, 700), 900 + rng.normal(0, 8, 800)])
    b = np.concatenate([50 + rng.normal(0, 1, 1000), 120 + rng.normal(0, 1, 500)])
    whole = BOCPD(channels=2, max_run=120)
    cps_whole = whole.update(np.vstack([a, b]))
    alone = BOCPD(channels=1, max_run=120)
    assert alone.update(a[None, :])[0].tolist() == cps_whole[0].tolist() == [700]
    pieces = BOCPD(channels=2, max_run=120)
    found: list[list[int]] = [[], []]
    for lo in range(0, a.size, 97):
        for c, cp in enumerate(pieces.update(np.vstack([a, b])[:, lo : lo + 97])):
            found[c] += cp.tolist()
    assert found == [cp.tolist() for cp in cps_whole]
    np.testing.assert_array_equal(pieces.lp, whole.lp)


def test_channels_on_threads_give_what_one_thread_gives(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(12)
    levels = rng.uniform(0, 2000, (3, 12))
    x = np.repeat(levels, 250, axis=1) + rng.normal(0, 2, (3, 3000))
    answers = []
    for least in (10**9, 1):  # one thread, then a thread per channel
        monkeypatch.setattr(bocpd, "PARALLEL_MIN_SAMPLES", least)
        det = BOCPD(channels=3, max_run=120)
        cps = det.update(x)
        answers.append(([c.tolist() for c in cps], det.lp, det.mu, det.last_cp, det.ring))
    (cps_one, *state_one), (cps_threads, *state_threads) = answers
    assert cps_one == cps_threads and all(len(c) >= 8 for c in cps_one)
    for a, b in zip(state_one, state_threads, strict=True):
        np.testing.assert_array_equal(a, b)


def test_state_pickles_and_resumes_identically():
    rng = np.random.default_rng(2)
    x = np.concatenate([300 + rng.normal(0, 3, 500), 800 + rng.normal(0, 3, 500)])[None, :]
    det = BOCPD(channels=1, max_run=300)
    det.update(x[:, :400])
    blob = pickle.dumps(det)
    assert len(blob) < 20_000  # small enough for every snapshot
    copy = pickle.loads(blob)
    assert copy.update(x[:, 400:])[0].tolist() == det.update(x[:, 400:])[0].tolist() == [500]


def test_nan_samples_are_skipped():
    x = np.array([[100.0, 100.5, np.nan, 99.8, 100.2] * 20])
    det = BOCPD(channels=1, max_run=50)
    assert det.update(x)[0].tolist() == []
    assert np.isfinite(det.lp).all()


def test_rejects_bad_settings():
    with pytest.raises(ValueError, match="hazard"):
        BOCPD(hazard=1.5)
    with pytest.raises(ValueError, match="noise_w"):
        BocpdPrior(noise_w=0.0)
    with pytest.raises(ValueError, match="shaped"):
        BOCPD(channels=2).update(np.zeros((3, 4)))


def test_plain_python_path_matches_compiled():
    # without numba (the Pi agent installs none) the same code runs uncompiled
    from nilm import bocpd

    if not bocpd.HAVE_NUMBA:
        pytest.skip("numba is not installed: only the plain path exists")
    rng = np.random.default_rng(12)
    x = np.concatenate([100 + rng.normal(0, 2, 60), 400 + rng.normal(0, 2, 60)])[None, :]
    compiled = BOCPD(channels=1, max_run=20)
    found = compiled.update(x)[0].tolist()
    plain = BOCPD(channels=1, max_run=20)
    original = bocpd._run_channel
    try:
        bocpd._run_channel = original.py_func  # type: ignore[attr-defined]
        assert plain.update(x)[0].tolist() == found == [60]
    finally:
        bocpd._run_channel = original
    np.testing.assert_allclose(plain.lp, compiled.lp, atol=1e-9)
