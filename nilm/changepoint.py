"""The change-point detector interface, the derivative-threshold baseline and a factory.

A change-point detector watches several channels (legs x homes) at once. `update` takes samples
shaped (channels, n) and returns, per channel, the global indices (counted from the first sample
ever fed) of the first samples of new segments. A detector reports every change point at most
`lag` samples after it happened and never reports one earlier than one it has already reported,
so everything at or before ``n_seen - 1 - lag`` is final.
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["DETECTORS", "ChangePointDetector", "DerivativeDetector", "make_detector"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DETECTORS = ("bocpd", "cusum", "derivative")


@runtime_checkable
class ChangePointDetector(Protocol):
    """What the event segmentation needs from a change-point detector."""

    channels: int

    @property
    def lag(self) -> int: ...

    def update(self, x: FloatArray) -> list[IntArray]: ...


class DerivativeDetector:
    """A change point wherever consecutive samples differ by at least `threshold_w`.

    Parameters
    ----------
    channels
        How many series advance together.
    threshold_w
        Smallest jump between consecutive samples that starts a new segment, in watts.

    Examples
    --------
    >>> det = DerivativeDetector(channels=1, threshold_w=20.0)
    >>> [c.tolist() for c in det.update(np.array([[5.0, 6.0, 60.0, 61.0, 10.0]]))]
    [[2, 4]]
    """

    def __init__(self, channels: int = 1, threshold_w: float = 20.0) -> None:
        if threshold_w <= 0:
            raise ValueError(f"threshold_w={threshold_w} must be positive")
        self.channels = channels
        self.threshold_w = threshold_w
        self.n_seen = 0
        self.last = np.full(channels, np.nan)

    @property
    def lag(self) -> int:
        return 0

    def update(self, x: FloatArray) -> list[IntArray]:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected samples shaped ({self.channels}, n), got {x.shape}")
        out: list[IntArray] = []
        for c in range(self.channels):
            row = x[c]
            # carry the last finite value over NaN samples
            prev = np.concatenate([[self.last[c]], row])
            idx = np.where(np.isfinite(prev), np.arange(prev.size), 0)
            np.maximum.accumulate(idx, out=idx)
            filled = prev[idx]
            jumps = np.abs(np.diff(filled)) >= self.threshold_w
            jumps &= np.isfinite(row)
            out.append(np.flatnonzero(jumps).astype(np.int64) + self.n_seen)
            if filled.size and np.isfinite(filled[-1]):
                self.last[c] = filled[-1]
        self.n_seen += x.shape[1]
        return out


def make_detector(
    name: str, channels: int, noise_w: float = 2.0, min_event_w: float = 30.0
) -> ChangePointDetector:
    """A detector by name ('bocpd', 'cusum' or 'derivative'), tuned in watts.

    >>> make_detector("cusum", channels=2).channels
    2
    """
    if name == "bocpd":
        from nilm.bocpd import BOCPD, BocpdPrior

        return BOCPD(channels=channels, prior=BocpdPrior(noise_w=noise_w))
    if name == "cusum":
        from nilm.cusum import Cusum

        return Cusum(channels=channels, drift_w=min_event_w / 2.0, threshold_w=2.0 * min_event_w)
    if name == "derivative":
        threshold_w = max(0.6 * min_event_w, 6.0 * noise_w)
        return DerivativeDetector(channels=channels, threshold_w=threshold_w)
    raise ValueError(f"unknown detector {name!r}; choose one of {DETECTORS}")
