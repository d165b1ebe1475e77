"""`nilm eval --submeter`: reading sub-metered truth and scoring the flow's activations on it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.eval import SubMeter, energy_section, evaluate_events, read_submeter
from nilm.records import Event, TruthEvent

T0 = datetime(2026, 2, 2, 6, tzinfo=UTC)


def _write(path: Path, seconds: np.ndarray, **devices: np.ndarray) -> Path:
    frame = pd.DataFrame({"timestamp_utc": [T0 + timedelta(seconds=int(s)) for s in seconds]})
    for name, p in devices.items():
        frame[name] = p
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_submeter_reads_back_in_time_order(tmp_path: Path, suffix: str) -> None:
    seconds = np.array([2, 0, 1, 3])
    path = _write(tmp_path / f"sub{suffix}", seconds, kettle=np.array([3.0, 1.0, 2.0, 4.0]))
    sub = read_submeter(path)
    assert sub.t0_s == T0.timestamp() and sub.sample_s == 1.0
    assert sub.power_w["kettle"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_uneven_submeter_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "sub.parquet", np.array([0, 1, 2, 5]), tv=np.ones(4))
    with pytest.raises(ValueError, match="evenly spaced"):
        read_submeter(path)


def test_activations_are_scored_against_the_submeter(tmp_path: Path) -> None:
    # The kettle draws 1800 W for 120 s from 60 s on; the fridge 100 W all along (10 minutes).
    kettle = np.zeros(600)
    kettle[60:180] = 1800.0
    fridge = np.full(600, 100.0)
    path = _write(tmp_path / "sub.parquet", np.arange(600), kettle=kettle, fridge=fridge)
    sub = read_submeter(path)

    def run(device: str | None, start: int, end: int, wh: float | None) -> dict[str, object]:
        return {
            "device": device, "start_ts": T0 + timedelta(seconds=start),
            "end_ts": T0 + timedelta(seconds=end), "energy_wh": wh,
        }  # fmt: skip

    found = [
        run("kettle", 60, 180, 60.0),  # exactly right: 1800 W for 120 s
        run("fridge", 0, 300, 100.0 * 300 / 3600),  # half the fridge's time found
        run(None, 300, 600, 100.0 * 300 / 3600),  # the other half, unknown device
        run("fridge", 500, 600, None),  # still open: no energy yet
    ]
    report = energy_section(found, sub, bin_s=60)
    truth_wh = 60.0 + 100.0 * 600 / 3600
    missing_wh = 100.0 * 300 / 3600
    assert report["correctly_assigned"] == pytest.approx(1 - missing_wh / (2 * truth_wh), abs=1e-4)
    assert report["per_device"]["kettle"]["relative_error"] == 0.0
    assert report["per_device"]["fridge"]["relative_error"] == pytest.approx(-0.5)
    assert report["unassigned_kwh"] == pytest.approx(missing_wh / 1000, abs=1e-4)


def test_energy_comes_under_both_protocols_when_held_out_devices_get_labelled() -> None:
    # A kettle on leg a every hour for 12 h; a fan (held out) on leg b from hour 6, every 20 min.
    n = 12 * 3600 + 600
    power = {"kettle": np.zeros(n), "fan": np.zeros(n)}
    truth: list[TruthEvent] = []
    runs = [("kettle", "a", 1500.0, h * 3600, 180) for h in range(12)]
    runs += [("fan", "b", 90.0, 6 * 3600 + k * 1200, 300) for k in range(18)]
    for device, leg, watts, start, length_s in runs:
        power[device][start : start + length_s] = watts
        truth.append(TruthEvent(T0 + timedelta(seconds=start), device, leg, "on", watts))
        truth.append(
            TruthEvent(T0 + timedelta(seconds=start + length_s), device, leg, "off", -watts)
        )
    truth.sort(key=lambda t: t.ts)
    events = [
        Event(
            f"e{i}", "h", t.ts, t.legs, t.delta_p_w, 0.05 * t.delta_p_w, abs(t.delta_p_w),
            t.delta_p_w / 120, 0.0, math.nan, math.nan,
            t.delta_p_w if t.legs == "a" else 0.0, t.delta_p_w if t.legs == "b" else 0.0, 120.0,
        )
        for i, t in enumerate(truth)
    ]  # fmt: skip
    sub = SubMeter(T0.timestamp(), 1.0, power)
    never = evaluate_events(events, truth, 3, holdout=["fan"], submeter=sub)["energy"]
    seen = evaluate_events(events, truth, 3, holdout=["fan"], submeter=sub, label_holdout_after=10)[
        "energy"
    ]
    assert never["label_holdout_after"] is None
    assert "correctly_assigned_holdout_never_labelled" not in never
    assert seen["label_holdout_after"] == 10
    assert seen["correctly_assigned_holdout_never_labelled"] == never["correctly_assigned"]
    # the fan's later runs now count for it
    assert never["per_device"]["fan"]["estimated_kwh"] == 0.0
    assert seen["per_device"]["fan"]["estimated_kwh"] > 0.0
    assert seen["correctly_assigned"] > never["correctly_assigned"]
