"""Two-sided CUSUM (Page 1954) change-point detection on several channels.

Each channel tracks the mean of its current segment. The cumulative sums of deviations above
``mean + drift`` and below ``mean - drift`` grow while the level has moved; when either exceeds
`threshold_w`, a change point is placed where that sum last left zero, and the segment's mean
restarts from the samples since then.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt

from nilm.bocpd import jit

__all__ = ["Cusum"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@jit
def _run_cusum(
    x: FloatArray,
    state: FloatArray,
    drift: float,
    threshold: float,
    max_lag: int,
    max_count: float,
    t0: int,
    last_cp: int,
    out_cp: IntArray,
) -> tuple[int, int]:
    """state = [mean, count, g_up, g_down, start_up, sum_up, n_up, start_down, sum_down, n_down]"""
    n_cp = 0
    for j in range(x.shape[0]):
        xv = x[j]
        if not math.isfinite(xv):
            continue
        t = t0 + j
        if state[1] == 0.0:
            state[0] = xv
            state[1] = 1.0
            continue
        mean = state[0]
        up = state[2] + xv - mean - drift
        if up <= 0.0:
            up = 0.0
            state[4] = t + 1
            state[5] = 0.0
            state[6] = 0.0
        else:
            state[5] += xv
            state[6] += 1.0
        down = state[3] + mean - xv - drift
        if down <= 0.0:
            down = 0.0
            state[7] = t + 1
            state[8] = 0.0
            state[9] = 0.0
        else:
            state[8] += xv
            state[9] += 1.0
        state[2] = up
        state[3] = down
        if up > threshold or down > threshold:
            if up > threshold:
                start, total, count = state[4], state[5], state[6]
            else:
                start, total, count = state[7], state[8], state[9]
            cp = max(int(start), t - max_lag)
            if cp > last_cp:
                out_cp[n_cp] = cp
                n_cp += 1
                last_cp = cp
            state[0] = total / count
            state[1] = count
            state[2] = 0.0
            state[3] = 0.0
            state[4] = t + 1
            state[5] = 0.0
            state[6] = 0.0
            state[7] = t + 1
            state[8] = 0.0
            state[9] = 0.0
        else:
            count = min(state[1] + 1.0, max_count)
            state[0] = mean + (xv - mean) / count
            state[1] = count
    return n_cp, last_cp


class Cusum:
    """Two-sided CUSUM with a running segment mean, in watts.

    Parameters
    ----------
    channels
        How many series advance together.
    drift_w
        Slack per sample: deviations smaller than this never accumulate (about half the
        smallest step of interest).
    threshold_w
        Accumulated deviation, in watt-samples, that declares a change.
    max_lag
        A change point is never placed more than this many samples before its alarm.
    max_count
        The segment mean averages at most this many samples, so it follows slow drift.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([100 + rng.normal(0, 2, 200), 180 + rng.normal(0, 2, 200)])
    >>> [c.tolist() for c in Cusum(channels=1).update(x[None, :])]
    [[200]]

    References
    ----------
    Page, E. S. (1954). Continuous inspection schemes. Biometrika 41(1/2), 100-115.
    """

    def __init__(
        self,
        channels: int = 1,
        drift_w: float = 15.0,
        threshold_w: float = 60.0,
        max_lag: int = 8,
        max_count: int = 300,
    ) -> None:
        if drift_w < 0 or threshold_w <= 0 or max_lag < 1:
            raise ValueError(
                f"need drift_w >= 0 (got {drift_w}), threshold_w > 0 (got {threshold_w}) and "
                f"max_lag >= 1 (got {max_lag})"
            )
        self.channels = channels
        self.drift_w = drift_w
        self.threshold_w = threshold_w
        self.max_lag = max_lag
        self.max_count = max_count
        self.n_seen = 0
        self.state = np.zeros((channels, 10))
        self.last_cp = np.zeros(channels, np.int64)

    @property
    def lag(self) -> int:
        return self.max_lag

    def update(self, x: FloatArray) -> list[IntArray]:
        x = np.ascontiguousarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected samples shaped ({self.channels}, n), got {x.shape}")
        out: list[IntArray] = []
        buf = np.empty(x.shape[1], np.int64)
        for c in range(self.channels):
            n_cp, last = _run_cusum(
                x[c], self.state[c], self.drift_w, self.threshold_w, self.max_lag,
                float(self.max_count), self.n_seen, int(self.last_cp[c]), buf,
            )  # fmt: skip
            self.last_cp[c] = last
            out.append(buf[:n_cp].copy())
        self.n_seen += x.shape[1]
        return out
