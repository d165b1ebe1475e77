"""Event signatures: what describes one switch, in physical units, and the models' feature dict.

A `Signature` is computed from an `Event` alone (steps of P, Q, S, pf and current, the step
normalised to nominal voltage, legs, inrush, ramp, settling, time of day); once on/off pairing
closes a run, `with_run` adds the run's duration and energy. `features` turns a signature into
the flat dict River models take, on scales chosen so that equal distances mean comparable
physical differences (a log scale for power, ratios for shape).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

from nilm.records import Event

__all__ = ["FEATURE_LIMITS", "Signature", "features", "normalised_delta_p_w", "signature_of"]

logger = logging.getLogger(__name__)

NOMINAL_LEG_V = 120.0
NOMINAL_SPLIT_V = 240.0


def normalised_delta_p_w(delta_p_w: float, voltage_v: float, legs: str) -> float:
    """The step as it would be at nominal voltage (120 V one leg, 240 V both), for a resistive load.

    A resistive load draws P = V²/R, so a step measured at voltage V is scaled by (V_nom / V)².
    An unknown or implausible voltage (NaN from REDD, or off by more than 25 %) leaves it as is.

    >>> round(normalised_delta_p_w(1000.0, 114.0, "a"), 1)
    1108.0
    >>> normalised_delta_p_w(1000.0, float("nan"), "ab")
    1000.0
    """
    nominal = NOMINAL_SPLIT_V if legs == "ab" else NOMINAL_LEG_V
    if not math.isfinite(voltage_v) or abs(voltage_v / nominal - 1.0) > 0.25:
        return delta_p_w
    return delta_p_w * (nominal / voltage_v) ** 2


@dataclass(frozen=True, slots=True)
class Signature:
    """The description of one event (a switch on, off or a step), units in the names.

    `run_duration_s` and `run_energy_wh` are those of the run an off event closes, once on/off
    pairing has matched it; None otherwise.
    """

    event_id: str
    legs: str
    is_on: bool
    delta_p_w: float
    delta_q_var: float
    delta_s_va: float
    delta_pf: float
    delta_current_a: float
    delta_p_norm_w: float
    inrush_peak_w: float
    inrush_ratio: float
    ramp_s: float
    settle_slope_w_per_s: float
    hour_of_day: float
    run_duration_s: float | None = None
    run_energy_wh: float | None = None

    def with_run(self, duration_s: float, energy_wh: float) -> Signature:
        """The same signature with the run it closes."""
        return replace(self, run_duration_s=duration_s, run_energy_wh=energy_wh)


def _finite(x: float, default: float = 0.0) -> float:
    return x if math.isfinite(x) else default


def signature_of(event: Event, utc_offset_s: int = 0) -> Signature:
    """The signature of `event`; `utc_offset_s` moves UTC to the home's local time of day.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> e = Event("e1", "h", datetime(2026, 1, 1, 18, 30, tzinfo=UTC), "a", 500.0, 40.0, 502.0,
    ...           4.2, 0.02, 100.0, 600.0, 500.0, 0.0, 120.0, inrush_peak_w=250.0)
    >>> s = signature_of(e, utc_offset_s=-3600)
    >>> (s.is_on, s.inrush_ratio, s.hour_of_day)
    (True, 0.5, 17.5)
    """
    dp = _finite(event.delta_p_w)
    magnitude = max(abs(dp), 1.0)
    seconds = (event.ts.hour * 3600 + event.ts.minute * 60 + event.ts.second + utc_offset_s) % 86400
    return Signature(
        event_id=event.event_id,
        legs=event.legs,
        is_on=dp > 0,
        delta_p_w=dp,
        delta_q_var=_finite(event.delta_q_var),
        delta_s_va=_finite(event.delta_s_va, dp),
        delta_pf=_finite(event.delta_pf),
        delta_current_a=_finite(event.delta_current_a),
        delta_p_norm_w=normalised_delta_p_w(dp, event.voltage_v, event.legs),
        inrush_peak_w=_finite(event.inrush_peak_w),
        inrush_ratio=_finite(event.inrush_peak_w) / magnitude,
        ramp_s=_finite(event.ramp_s),
        settle_slope_w_per_s=_finite(event.settle_slope_w_per_s),
        hour_of_day=seconds / 3600.0,
    )


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


# The range of every feature `features` returns: HalfSpaceTrees needs [0, 1] inputs, and fixed
# physical limits (unlike a learned min-max) do not move as the home's data comes in.
FEATURE_LIMITS: dict[str, tuple[float, float]] = {
    "on": (0.0, 1.0),
    "log_p": (1.0, 4.2),
    "q_ratio": (0.0, 1.5),
    "pf_step": (0.0, 1.0),
    "leg_a": (0.0, 1.0),
    "leg_b": (0.0, 1.0),
    "leg_ab": (0.0, 1.0),
    "inrush": (0.0, 3.0),
    "ramp": (0.0, 3.5),
    "settle": (-0.5, 0.5),
    "tod_sin": (-1.0, 1.0),
    "tod_cos": (-1.0, 1.0),
    "run": (0.0, 5.0),
}


def features(sig: Signature, time_of_day: bool = True) -> dict[str, float]:
    """The feature dict of a signature, every value inside `FEATURE_LIMITS`.

    Power is on a log scale (a 10 % difference is the same distance at 60 W and 6 kW); shape
    features are ratios to the step, so they do not scale with it. `run` is log10 of the run
    duration in seconds for an off event that pairing matched, 0 otherwise.

    >>> from datetime import UTC, datetime
    >>> e = Event("e1", "h", datetime(2026, 1, 1, 6, tzinfo=UTC), "ab", -4800.0, -50.0, -4801.0,
    ...           -20.0, 0.0, 5000.0, 200.0, -2400.0, -2400.0, 240.0)
    >>> f = features(signature_of(e))
    >>> (f["on"], round(f["log_p"], 3), f["leg_ab"], f["tod_cos"])
    (0.0, 3.681, 1.0, 0.0)
    """
    magnitude = max(abs(sig.delta_p_norm_w), 10.0)
    s = max(abs(sig.delta_s_va), magnitude)
    angle = 2.0 * math.pi * sig.hour_of_day / 24.0
    x = {
        "on": 1.0 if sig.is_on else 0.0,
        "log_p": _clip(math.log10(magnitude), *FEATURE_LIMITS["log_p"]),
        "q_ratio": _clip(abs(sig.delta_q_var) / magnitude, *FEATURE_LIMITS["q_ratio"]),
        "pf_step": _clip(abs(sig.delta_p_w) / s if s > 0 else 1.0, 0.0, 1.0),
        "leg_a": 1.0 if sig.legs == "a" else 0.0,
        "leg_b": 1.0 if sig.legs == "b" else 0.0,
        "leg_ab": 1.0 if sig.legs == "ab" else 0.0,
        "inrush": _clip(sig.inrush_ratio, *FEATURE_LIMITS["inrush"]),
        "ramp": _clip(math.log10(1.0 + sig.ramp_s), *FEATURE_LIMITS["ramp"]),
        "settle": _clip(60.0 * sig.settle_slope_w_per_s / magnitude, *FEATURE_LIMITS["settle"]),
        "run": _clip(
            math.log10(1.0 + sig.run_duration_s) if sig.run_duration_s else 0.0,
            *FEATURE_LIMITS["run"],
        ),
    }
    if time_of_day:
        x["tod_sin"] = round(math.sin(angle), 12)
        x["tod_cos"] = round(math.cos(angle), 12)
    return x
