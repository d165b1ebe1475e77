"""`nilm eval --submeter`: reading sub-metered truth and scoring the flow's activations on it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.eval import energy_section, read_submeter

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
