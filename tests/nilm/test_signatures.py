"""Signatures: physical descriptions of events, and the feature dicts the models take."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from nilm.records import Event
from nilm.signatures import FEATURE_LIMITS, features, normalised_delta_p_w, signature_of


def event(dp: float = 500.0, legs: str = "a", volts: float = 120.0, **kw: float) -> Event:
    ts = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
    return Event(
        "e", "h", ts, legs, dp, 0.75 * dp, 1.25 * dp, dp / volts, 0.0, 100.0, 100.0 + dp,
        dp, 0.0, volts, **kw,
    )  # fmt: skip


def test_voltage_normalisation_scales_a_resistive_step_by_v_squared() -> None:
    assert normalised_delta_p_w(1000.0, 120.0, "a") == 1000.0
    assert normalised_delta_p_w(1000.0, 240.0, "ab") == 1000.0
    # The same heater measured at 114 V draws (114/120)^2 of its 120 V power.
    assert normalised_delta_p_w(1000.0 * (114 / 120) ** 2, 114.0, "a") == pytest.approx(1000.0)
    # 240 V loads are normalised to 240 V, not 120 V.
    assert normalised_delta_p_w(4000.0, 236.0, "ab") == pytest.approx(4000.0 * (240 / 236) ** 2)
    # Unknown or implausible voltages leave the step alone instead of inventing a correction.
    assert normalised_delta_p_w(1000.0, math.nan, "a") == 1000.0
    assert normalised_delta_p_w(1000.0, 60.0, "a") == 1000.0


def test_signature_carries_inrush_ratio_direction_and_time_of_day() -> None:
    s = signature_of(event(200.0, inrush_peak_w=600.0, ramp_s=2.0, settle_slope_w_per_s=-0.5))
    assert s.is_on and s.inrush_ratio == 3.0 and s.ramp_s == 2.0
    assert s.settle_slope_w_per_s == -0.5 and s.hour_of_day == 6.0
    off = signature_of(event(-200.0), utc_offset_s=-8 * 3600)
    assert not off.is_on and off.hour_of_day == 22.0
    assert off.run_duration_s is None
    ran = off.with_run(900.0, 30.0)
    assert (ran.run_duration_s, ran.run_energy_wh) == (900.0, 30.0)


def test_nan_fields_do_not_reach_the_models() -> None:
    e = event(300.0, volts=math.nan)
    e = Event(**{**{f: getattr(e, f) for f in e.__slots__ if f != "extra"},
                 "delta_q_var": math.nan, "delta_s_va": math.nan})  # fmt: skip
    x = features(signature_of(e))
    assert all(math.isfinite(v) for v in x.values())


@pytest.mark.parametrize("dp", [-9000.0, -60.0, 5.0, 125.0, 4500.0, 20000.0])
def test_features_stay_inside_their_limits(dp: float) -> None:
    x = features(signature_of(event(dp, inrush_peak_w=50 * abs(dp), ramp_s=1e5,
                                    settle_slope_w_per_s=1e4)))  # fmt: skip
    for name, value in x.items():
        lo, hi = FEATURE_LIMITS[name]
        assert lo <= value <= hi, (name, value)


def test_power_is_on_a_log_scale_so_ten_percent_is_the_same_distance_everywhere() -> None:
    def log_p(dp: float) -> float:
        return features(signature_of(event(dp)))["log_p"]

    assert log_p(110.0) - log_p(100.0) == pytest.approx(log_p(5500.0) - log_p(5000.0))
    assert features(signature_of(event(500.0, legs="ab", volts=240.0)))["leg_ab"] == 1.0
