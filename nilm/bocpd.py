"""Online Bayesian change-point detection (Adams & MacKay 2007) for many channels at once.

Each channel (a leg of a home) keeps a run-length posterior in log space over run lengths
``0 .. R-1``. A run of ``r`` samples has a Normal-Gamma posterior over its mean and precision, so
the next sample's predictive is a Student-t. The hazard is constant. The run length is bounded at
``R``: the last bin *absorbs* the tail (runs of length ``R-1`` and longer share it, with the
statistics of the last ``R-1`` samples), so a segment that outlives the bound keeps its mass
instead of being dropped, which is what would create a false change point.

Under a constant hazard the posterior probability of run length 0 is the hazard itself at every
step, so it says nothing. A change point is decided from the posterior mass at short run lengths
``1 .. max_lag``: once that mass reaches ``threshold``, the change point is placed at the most
probable short run length, that is at most ``max_lag`` samples back.

The inner loop is compiled with numba when numba is importable; the log and exp are written as
polynomials that the compiler vectorises across run lengths (no SVML here), which is what makes
it fast. Without numba the same code runs as plain Python (slow, for small inputs only).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["BOCPD", "BocpdPrior", "bocpd_step_reference", "bocpd_tables"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
F = TypeVar("F", bound=Callable[..., Any])

try:  # numba is in the PC extra only; the Pi agent imports nilm without it.
    from numba import njit as _njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised on the Pi only
    HAVE_NUMBA = False


def jit(func: F) -> F:
    """Compile `func` with numba (cached, fast math) when numba is there; else leave it."""
    if not HAVE_NUMBA:  # pragma: no cover
        return func
    # no "nnan"/"ninf": the kernels test for NaN samples
    flags = {"reassoc", "contract", "arcp", "nsz", "afn"}
    compiled = _njit(cache=True, fastmath=flags, error_model="numpy", nogil=True)(func)
    return compiled  # type: ignore[return-value]


_LN2 = 0.6931471805599453
_INV_LN2 = 1.4426950408889634
_SQRT2 = 1.4142135623730951
_NEG_BIG = -1.0e300  # stands for log(0); finite so that arithmetic on it stays NaN-free


@jit
def _vexp_sum(y: FloatArray, shift: float, out: FloatArray, kbits: IntArray) -> float:
    """out = exp(y - shift) for y <= shift, as a vectorisable polynomial; returns sum(out).

    exp(v) = 2**k * exp(f) with k = round(v / ln 2) and |f| <= ln2 / 2; 2**k is built from its
    exponent bits in a second loop. Values below exp(-708) give 0.
    """
    n = y.shape[0]
    for i in range(n):
        v = max(y[i] - shift, -708.0)
        k = math.floor(v * _INV_LN2 + 0.5)
        f = v - k * _LN2
        # Taylor series of exp(f), |f| <= 0.347: degree 12 gives < 2e-16 relative error.
        p = 1.0 / 479001600.0
        p = p * f + 1.0 / 39916800.0
        p = p * f + 1.0 / 3628800.0
        p = p * f + 1.0 / 362880.0
        p = p * f + 1.0 / 40320.0
        p = p * f + 1.0 / 5040.0
        p = p * f + 1.0 / 720.0
        p = p * f + 1.0 / 120.0
        p = p * f + 1.0 / 24.0
        p = p * f + 1.0 / 6.0
        p = p * f + 0.5
        p = p * f + 1.0
        p = p * f + 1.0
        out[i] = p
        kbits[i] = (np.int64(k) + 1023) << 52
    scale = kbits.view(np.float64)
    total = 0.0
    for i in range(n):
        out[i] = out[i] * scale[i]
        total += out[i]
    return total


@jit
def _vlog(x: FloatArray, out: FloatArray, bits: IntArray) -> None:
    """out = log(x) for positive normal x, as a vectorisable polynomial.

    x = m * 2**e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172,
    summed as an odd series to degree 21 (< 1e-16 relative error).
    """
    n = x.shape[0]
    xb = x.view(np.int64)
    ebuf = out  # reuse: exponent as float, overwritten below
    for i in range(n):
        b = xb[i]
        e = ((b >> 52) & 0x7FF) - 1023
        mant = (b & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000  # m in [1, 2)
        # move m into [sqrt(1/2), sqrt(2)): if m >= sqrt 2, halve it and bump the exponent
        big = np.int64(mant > 0x3FF6A09E667F3BCC)
        bits[i] = mant - (big << 52)
        ebuf[i] = np.float64(e + big)
    m = bits.view(np.float64)
    for i in range(n):
        s = (m[i] - 1.0) / (m[i] + 1.0)
        s2 = s * s
        p = 1.0 / 21.0
        p = p * s2 + 1.0 / 19.0
        p = p * s2 + 1.0 / 17.0
        p = p * s2 + 1.0 / 15.0
        p = p * s2 + 1.0 / 13.0
        p = p * s2 + 1.0 / 11.0
        p = p * s2 + 1.0 / 9.0
        p = p * s2 + 1.0 / 7.0
        p = p * s2 + 1.0 / 5.0
        p = p * s2 + 1.0 / 3.0
        p = p * s2 + 1.0
        out[i] = ebuf[i] * _LN2 + 2.0 * s * p


@jit
def _run_channel(
    x: FloatArray,
    lp: FloatArray,
    mu: FloatArray,
    beta: FloatArray,
    a_tab: FloatArray,
    k_tab: FloatArray,
    alpha_tab: FloatArray,
    inv_tab: FloatArray,
    mu0: float,
    beta0: float,
    log_h: float,
    log_1mh: float,
    max_lag: int,
    threshold: float,
    t0: int,
    last_cp: int,
    ring: IntArray,
    out_cp: IntArray,
) -> tuple[int, int]:
    """Advance one channel's posterior over `x`; write change points (global sample indices).

    `lp` holds log P(r | x so far) for r = 0..R-1 (normalised), `mu` and `beta` the Normal-Gamma
    statistics of each run length. `ring[0]` counts the finite samples seen and `ring[1:]` holds
    the global indices of the latest ones (run lengths count samples, NaN samples are skipped).
    Returns (number of change points written, last change point).

    Per sample and run length this costs one log and one exp: the updated beta of run length r
    is the very quantity whose log the predictive needs, so log(beta) carries over shifted.
    """
    n_r = lp.shape[0]
    m = np.empty(n_r)
    w = np.empty(n_r)
    mu_up = np.empty(n_r)
    logw = np.empty(n_r)
    logb = np.empty(n_r)
    ex = np.empty(n_r)
    bits = np.empty(n_r, np.int64)
    _vlog(beta, logb, bits)
    log_beta0 = math.log(beta0)
    n_ring = ring.shape[0] - 1
    n_cp = 0
    for j in range(x.shape[0]):
        xv = x[j]
        if not math.isfinite(xv):
            continue
        k = ring[0]
        ring[0] = k + 1
        ring[1 + k % n_ring] = t0 + j
        # w = beta + K d^2 is both the predictive's scale term and the grown run's new beta
        for r in range(n_r):
            d = xv - mu[r]
            w[r] = beta[r] + k_tab[r] * d * d
            mu_up[r] = mu[r] + d * inv_tab[r]
        _vlog(w, logw, bits)
        # log predictive A + a log(beta) - (a + 1/2) log(w), plus the prior log P(r)
        mx = _NEG_BIG
        for r in range(n_r):
            v = lp[r] + a_tab[r] + alpha_tab[r] * logb[r] - (alpha_tab[r] + 0.5) * logw[r]
            m[r] = v
            mx = max(mx, v)
        s = _vexp_sum(m, mx, ex, bits)
        log_ev = mx + math.log(s)
        # growth, with the last bin absorbing the runs that would leave the bound
        last = max(m[n_r - 1], m[n_r - 2])
        tail = last + math.log(math.exp(m[n_r - 1] - last) + math.exp(m[n_r - 2] - last))
        shift = log_1mh - log_ev
        for r in range(1, n_r):
            lp[r] = m[r - 1] + shift
            mu[r] = mu_up[r - 1]
            beta[r] = w[r - 1]
            logb[r] = logw[r - 1]
        lp[n_r - 1] = tail + shift
        lp[0] = log_h
        mu[0] = mu0
        beta[0] = beta0
        logb[0] = log_beta0
        # decision: posterior mass at run lengths 1..max_lag
        short = 0.0
        best = 1
        for r in range(1, max_lag + 1):
            short += math.exp(lp[r])
            if lp[r] > lp[best]:
                best = r
        if short >= threshold and k - best + 1 >= 0:
            # the first sample of the run; one more than max_lag samples back (only after NaN
            # samples) would break the promise that everything older is final: drop it
            cp = ring[1 + (k - best + 1) % n_ring]
            if cp > last_cp and cp >= t0 + j - max_lag:
                out_cp[n_cp] = cp
                n_cp += 1
                last_cp = cp
    return n_cp, last_cp


# Channels advance on threads (the compiled kernel releases the GIL) once a batch is long
# enough to pay for the hand-off: a replay's chunks, not a live second's readings.
PARALLEL_MIN_SAMPLES = 2_000
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="bocpd")
    return _POOL


def _forget_pool() -> None:
    global _POOL
    _POOL = None  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_pool)


def bocpd_tables(
    n_r: int, kappa0: float, alpha0: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Per-run-length constants: (A, K, alpha, kappa) of the Student-t predictive.

    For a run of r samples, kappa = kappa0 + r and alpha = alpha0 + r/2, and the predictive is
    log p(x) = A + alpha log(beta) - (alpha + 1/2) log(beta + K (x - mu)^2) with
    A = lgamma(alpha + 1/2) - lgamma(alpha) - log(2 pi (kappa + 1) / kappa) / 2 and
    K = kappa / (2 (kappa + 1)).
    """
    r = np.arange(n_r, dtype=np.float64)
    kappa = kappa0 + r
    alpha = alpha0 + r / 2.0
    lg = np.vectorize(math.lgamma, otypes=[np.float64])
    a_tab = lg(alpha + 0.5) - lg(alpha) - 0.5 * np.log(2.0 * np.pi * (kappa + 1.0) / kappa)
    k_tab = kappa / (2.0 * (kappa + 1.0))
    return a_tab, k_tab, alpha, kappa


def bocpd_step_reference(
    lp: FloatArray, mu: FloatArray, beta: FloatArray, x: float, prior: BocpdPrior, hazard: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """One exact, untruncated BOCPD step in plain numpy (for tests): the arrays grow by one."""
    n = lp.shape[0]
    a_tab, k_tab, alpha, _kappa = bocpd_tables(n, prior.kappa0, prior.alpha0)
    kappa = prior.kappa0 + np.arange(n, dtype=np.float64)
    d = x - mu
    lpred = a_tab + alpha * np.log(beta) - (alpha + 0.5) * np.log(beta + k_tab * d * d)
    m = lp + lpred
    log_ev = float(np.logaddexp.reduce(m))
    new_lp = np.concatenate([[math.log(hazard)], m - log_ev + math.log1p(-hazard)])
    new_mu = np.concatenate([[prior.mu0], (kappa * mu + x) / (kappa + 1.0)])
    new_beta = np.concatenate([[prior.beta0], beta + kappa * d * d / (2.0 * (kappa + 1.0))])
    return new_lp, new_mu, new_beta


class BocpdPrior:
    """Normal-Gamma prior of a segment's level and noise, set in watts.

    Parameters
    ----------
    noise_w
        Typical standard deviation of the meter's noise on a steady load, in watts.
    level_w
        Spread of a new segment's level around `mu0_w`, in watts (vague: loads span kW).
    alpha0
        Shape of the Gamma prior on the precision; small lets each segment learn its own noise.
    mu0_w
        Prior mean level, in watts.

    Examples
    --------
    >>> p = BocpdPrior(noise_w=2.0, level_w=2000.0)
    >>> round(p.beta0, 3), p.kappa0
    (4.0, 1e-06)
    """

    __slots__ = ("alpha0", "beta0", "kappa0", "level_w", "mu0", "noise_w")

    def __init__(
        self, noise_w: float = 2.0, level_w: float = 3000.0, alpha0: float = 1.0, mu0_w: float = 0.0
    ) -> None:
        if noise_w <= 0 or level_w <= 0 or alpha0 <= 0:
            raise ValueError(
                f"noise_w={noise_w}, level_w={level_w} and alpha0={alpha0} must all be positive"
            )
        self.noise_w = noise_w
        self.level_w = level_w
        self.alpha0 = alpha0
        self.mu0 = mu0_w
        # E[precision] = alpha0 / beta0 = 1 / noise^2; the level's prior sd is noise / sqrt(kappa0)
        self.beta0 = alpha0 * noise_w * noise_w
        self.kappa0 = (noise_w / level_w) ** 2

    def __getstate__(self) -> tuple[float, float, float, float]:
        return (self.noise_w, self.level_w, self.alpha0, self.mu0)

    def __setstate__(self, state: tuple[float, float, float, float]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"BocpdPrior(noise_w={self.noise_w}, level_w={self.level_w}, "
            f"alpha0={self.alpha0}, mu0_w={self.mu0})"
        )


class BOCPD:
    """Bayesian online change-point detection on several channels, run length bounded at `R`.

    Parameters
    ----------
    channels
        How many independent series (legs x homes) advance together.
    max_run
        R, the number of run-length bins; the last absorbs all longer runs.
    hazard
        Constant probability of a change at each sample (1 / expected segment length).
    prior
        The Normal-Gamma prior in watts; `BocpdPrior()` when None.
    max_lag
        Change points are decided from the mass at run lengths 1..max_lag, so each is known at
        most `max_lag` samples after it happened.
    threshold
        Posterior mass at short run lengths that declares a change point.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([100 + rng.normal(0, 2, 300), 180 + rng.normal(0, 2, 300)])
    >>> det = BOCPD(channels=1, max_run=100)
    >>> [cp.tolist() for cp in det.update(x[None, :])]
    [[300]]

    References
    ----------
    Adams, R. P. and MacKay, D. J. C. (2007). Bayesian online changepoint detection.
    arXiv:0710.3742.
    """

    def __init__(
        self,
        channels: int = 1,
        max_run: int = 300,
        hazard: float = 1.0 / 1000.0,
        prior: BocpdPrior | None = None,
        max_lag: int = 8,
        threshold: float = 0.5,
    ) -> None:
        if max_run < 3 or not 0.0 < hazard < 1.0 or not 1 <= max_lag < max_run - 1:
            raise ValueError(
                f"need max_run >= 3 (got {max_run}), 0 < hazard < 1 (got {hazard}) and "
                f"1 <= max_lag < max_run - 1 (got {max_lag})"
            )
        self.channels = channels
        self.max_run = max_run
        self.hazard = hazard
        self.prior = prior
        self.max_lag = max_lag
        self.threshold = threshold
        self._prior = prior if prior is not None else BocpdPrior()
        self.n_seen = 0
        self.lp = np.full((channels, max_run), _NEG_BIG)
        self.lp[:, 0] = 0.0
        self.mu = np.full((channels, max_run), self._prior.mu0)
        self.beta = np.full((channels, max_run), self._prior.beta0)
        self.last_cp = np.zeros(channels, np.int64)  # the first sample starts a segment
        self.ring = np.zeros((channels, max_lag + 2), np.int64)
        self._tables: tuple[FloatArray, FloatArray, FloatArray, FloatArray] | None = None

    @property
    def lag(self) -> int:
        """Every change point at a sample index <= n_seen - 1 - lag has been reported."""
        return self.max_lag

    def _get_tables(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        if self._tables is None:
            self._tables = bocpd_tables(self.max_run, self._prior.kappa0, self._prior.alpha0)
        return self._tables

    def __getstate__(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k != "_tables"}
        state["_tables"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def update(self, x: FloatArray) -> list[IntArray]:
        """Feed samples shaped (channels, n); the change points found, per channel.

        A change point is the global index (counting from the first sample ever fed) of the first
        sample of the new segment. NaN samples are skipped (the posterior does not move).
        """
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected samples shaped ({self.channels}, n), got {x.shape}")
        a_tab, k_tab, alpha, kappa = self._get_tables()
        inv = 1.0 / (kappa + 1.0)
        log_h = math.log(self.hazard)
        log_1mh = math.log1p(-self.hazard)

        def run(c: int) -> IntArray:
            buf = np.empty(x.shape[1], np.int64)
            n_cp, last = _run_channel(
                x[c], self.lp[c], self.mu[c], self.beta[c], a_tab, k_tab, alpha, inv,
                self._prior.mu0, self._prior.beta0, log_h, log_1mh, self.max_lag,
                self.threshold, self.n_seen, int(self.last_cp[c]), self.ring[c], buf,
            )  # fmt: skip
            self.last_cp[c] = last
            return buf[:n_cp].copy()

        channels = range(self.channels)
        if HAVE_NUMBA and self.channels > 1 and x.shape[1] >= PARALLEL_MIN_SAMPLES:
            # each channel touches only its own rows of the state
            out = list(_pool().map(run, channels))
        else:
            out = [run(c) for c in channels]
        self.n_seen += x.shape[1]
        return out

    def posterior(self, channel: int = 0) -> FloatArray:
        """P(run length = r | samples so far) for r = 0..R-1 (the last bin is 'R-1 or more')."""
        out: FloatArray = np.exp(self.lp[channel])
        return out
