"""The engineered signature of an event, as a flat feature dict for the batch models.

These are derived from the `Event` fields alone, so that a model trained on them can be served
over the same dict the online models see. Magnitudes are also given as signed logarithms, which
tree models do not need but which keep the networks' inputs in a narrow range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from nilm.pairing import Pairer
from nilm.records import Event
from nilm.signatures import features, signature_of

__all__ = [
    "FEATURE_NAMES",
    "event_features",
    "event_from_row",
    "feature_matrix",
    "learner_feature_rows",
    "served_features",
]

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


def served_features(event: Event, x: Mapping[str, float]) -> dict[str, float]:
    """What a served batch model sees: `event_features` and the online models' dict `x`.

    The two share only the leg flags, which agree; so a model trained on either set of names
    (`nilm eval`'s batch runs use `FEATURE_NAMES`, `nilm retrain` uses both) finds its inputs.

    >>> from datetime import UTC, datetime
    >>> e = Event("id", "h", datetime(2026, 1, 5, tzinfo=UTC), "a", 120.0, 90.0, 150.0, 1.0,
    ...           0.0, 100.0, 220.0, 120.0, 0.0, 120.0)
    >>> f = served_features(e, {"log_p": 2.08, "leg_a": 1.0})
    >>> f["log_p"], f["delta_p_w"], len(f) == len(FEATURE_NAMES) + 1
    (2.08, 120.0, True)
    """
    return event_features(event) | dict(x)


def _number(row: Mapping[str, Any], name: str, default: float = math.nan) -> float:
    value = row.get(name)
    return default if value is None else float(value)


def event_from_row(row: Mapping[str, Any]) -> Event:
    """The `Event` an `events` row was written from (`nilm.learning.event_row`'s columns).

    A column that is missing or NULL (a database written before it existed) reads as NaN, or 0
    for the settling features, which `signature_of` and `event_features` treat as unknown.

    >>> from datetime import UTC, datetime
    >>> row = {"event_id": "e", "home_id": "h", "ts": datetime(2026, 1, 5, tzinfo=UTC),
    ...        "legs": "b", "delta_p_w": -800.0, "delta_q_var": None}
    >>> e = event_from_row(row)
    >>> e.legs, e.delta_p_w, math.isnan(e.delta_q_var), e.inrush_peak_w
    ('b', -800.0, True, 0.0)
    """
    ts = row["ts"]
    if not isinstance(ts, datetime) or ts.tzinfo is None:
        raise ValueError(f"event {row.get('event_id')!r} has ts {ts!r}: need an aware datetime")
    return Event(
        event_id=str(row["event_id"]),
        home_id=str(row["home_id"]),
        ts=ts.astimezone(UTC),  # DuckDB answers in its session's time zone
        legs=str(row["legs"]),
        delta_p_w=_number(row, "delta_p_w"),
        delta_q_var=_number(row, "delta_q_var"),
        delta_s_va=_number(row, "delta_s_va"),
        delta_current_a=_number(row, "delta_current_a"),
        delta_pf=_number(row, "delta_pf"),
        p_before_w=_number(row, "p_before_w"),
        p_after_w=_number(row, "p_after_w"),
        delta_p_a_w=_number(row, "delta_p_a_w"),
        delta_p_b_w=_number(row, "delta_p_b_w"),
        voltage_v=_number(row, "voltage_v"),
        inrush_peak_w=_number(row, "inrush_peak_w", 0.0),
        ramp_s=_number(row, "ramp_s", 0.0),
        settle_slope_w_per_s=_number(row, "settle_slope_w_per_s", 0.0),
        detector=str(row.get("detector") or ""),
    )


def learner_feature_rows(
    events: Sequence[Event],
    devices: Sequence[str | None],
    utc_offset_s: int = 0,
) -> list[dict[str, float]]:
    """The dict a `HomeLearner` gives its served model for each event, rebuilt after the fact.

    Events must come in stream order (by `ts`) with the device the flow gave each (predicted or
    confirmed, None if unknown): on/off pairing is replayed as the learner ran it, so an off event
    gets the run it closes. Pairing followed the predictions of the time, so where those differ
    from the stored devices the `run` feature can differ too.

    >>> from datetime import UTC, datetime, timedelta
    >>> t = datetime(2026, 1, 5, tzinfo=UTC)
    >>> on = Event("1", "h", t, "a", 500.0, 0.0, 500.0, 4.0, 0.0, 0.0, 500.0, 500.0, 0.0, 120.0)
    >>> off = Event("2", "h", t + timedelta(hours=1), "a", -490.0, 0.0, -490.0, -4.0, 0.0,
    ...             500.0, 10.0, -490.0, 0.0, 120.0)
    >>> [round(x["run"], 2) for x in learner_feature_rows([on, off], ["kettle", "kettle"])]
    [0.0, 3.56]
    """
    if len(events) != len(devices):
        raise ValueError(f"{len(events)} events but {len(devices)} devices: give one per event")
    pairer = Pairer()
    rows: list[dict[str, float]] = []
    for event, device in zip(events, devices, strict=True):
        sig = signature_of(event, utc_offset_s)
        closes = pairer.match(event, None)
        if closes is not None:
            hours = (event.ts - closes.start_ts).total_seconds() / 3600.0
            sig = sig.with_run(hours * 3600.0, hours * (closes.power_w - event.delta_p_w) / 2.0)
        rows.append(served_features(event, features(sig)))
        pairer.on_event(event, device)
    return rows
