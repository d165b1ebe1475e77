"""The engineered signature of an event, as a flat feature dict for the batch models.

These are derived from the `Event` fields alone, so that a model trained on them can be served
over the same dict the online models see. Magnitudes are also given as signed logarithms, which
tree models do not need but which keep the networks' inputs in a narrow range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from nilm.records import Event

__all__ = ["FEATURE_NAMES", "event_features", "feature_matrix"]

FEATURE_NAMES = (
    "delta_p_w",
    "abs_delta_p_w",
    "log_abs_delta_p",
    "delta_q_var",
    "delta_s_va",
    "delta_current_a",
    "step_pf",
    "p_before_w",
    "p_after_w",
    "delta_p_a_w",
    "delta_p_b_w",
    "leg_a",
    "leg_b",
    "leg_ab",
    "is_on",
    "inrush_peak_w",
    "inrush_ratio",
    "ramp_s",
    "settle_slope_w_per_s",
    "voltage_v",
)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def event_features(event: Event) -> dict[str, float]:
    """The signature of `event` under `FEATURE_NAMES`; non-finite values become 0.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> e = Event("id", "h", datetime(2026, 1, 5, tzinfo=UTC), "a", 120.0, 90.0, 150.0, 1.0,
    ...           0.0, 100.0, 220.0, 120.0, 0.0, 120.0, inrush_peak_w=400.0)
    >>> f = event_features(e)
    >>> f["step_pf"], f["leg_a"], f["is_on"], f["inrush_ratio"]
    (0.8, 1.0, 1.0, 3.3333333333333335)
    """
    dp = _finite(event.delta_p_w)
    ds = _finite(event.delta_s_va)
    abs_dp = abs(dp)
    features = {
        "delta_p_w": dp,
        "abs_delta_p_w": abs_dp,
        "log_abs_delta_p": math.log1p(abs_dp),
        "delta_q_var": _finite(event.delta_q_var),
        "delta_s_va": ds,
        "delta_current_a": _finite(event.delta_current_a),
        "step_pf": min(abs_dp / abs(ds), 1.0) if abs(ds) > 1e-9 else 1.0,
        "p_before_w": _finite(event.p_before_w),
        "p_after_w": _finite(event.p_after_w),
        "delta_p_a_w": _finite(event.delta_p_a_w),
        "delta_p_b_w": _finite(event.delta_p_b_w),
        "leg_a": float(event.legs == "a"),
        "leg_b": float(event.legs == "b"),
        "leg_ab": float(event.legs == "ab"),
        "is_on": float(dp > 0),
        "inrush_peak_w": _finite(event.inrush_peak_w),
        "inrush_ratio": _finite(event.inrush_peak_w) / abs_dp if abs_dp > 1e-9 else 0.0,
        "ramp_s": _finite(event.ramp_s),
        "settle_slope_w_per_s": _finite(event.settle_slope_w_per_s),
        "voltage_v": _finite(event.voltage_v),
    }
    return features


def feature_matrix(
    rows: Sequence[Mapping[str, float]], names: Sequence[str] = FEATURE_NAMES
) -> npt.NDArray[np.float64]:
    """Rows of feature dicts as an (n, len(names)) array; a missing name reads as 0.

    >>> feature_matrix([{"a": 1.0}, {"b": 2.0}], ("a", "b")).tolist()
    [[1.0, 0.0], [0.0, 2.0]]
    """
    out = np.zeros((len(rows), len(names)), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, name in enumerate(names):
            value = row.get(name, 0.0)
            out[i, j] = value if math.isfinite(value) else 0.0
    return out
