"""Energy per device against sub-metered truth (`nilm.energy`)."""

from __future__ import annotations

import numpy as np
import pytest

from nilm.energy import (
    binned_energy_from_intervals,
    binned_energy_from_power,
    energy_correctly_assigned,
    energy_report,
    per_device_energy_error,
)


def test_perfect_estimate_scores_one_and_nothing_assigned_scores_half() -> None:
    truth = {"kettle": np.array([2.0, 0.0, 1.0]), "tv": np.array([0.5, 0.5, 0.5])}
    assert energy_correctly_assigned(truth, truth) == 1.0
    # Energy given to nobody is missing once: NILMTK's TECA is then 1 - 1/2.
    assert energy_correctly_assigned({}, truth) == 0.5


def test_energy_given_to_the_wrong_device_costs_twice() -> None:
    truth = {"kettle": np.array([1.0, 1.0])}
    assert energy_correctly_assigned({"toaster": np.array([1.0, 1.0])}, truth) == 0.0
    # Right device, wrong time: also wrong twice over.
    assert energy_correctly_assigned({"kettle": np.array([2.0, 0.0])}, truth) == 0.5


def test_no_true_energy_gives_none() -> None:
    assert energy_correctly_assigned({"tv": np.array([1.0])}, {"tv": np.array([0.0])}) is None


def test_power_is_binned_into_watt_hours() -> None:
    p = np.full(150, 120.0)  # 120 W for 150 s
    bins = binned_energy_from_power(p, bin_s=60)
    assert bins.tolist() == pytest.approx([2.0, 2.0, 1.0])
    # 10 samples 2 s apart are 20 s: two bins of 10 s at 3600 W.
    every_2s = binned_energy_from_power(np.full(10, 3600.0), 10, sample_s=2.0)
    assert every_2s.tolist() == pytest.approx([10.0, 10.0])


def test_intervals_spread_evenly_over_the_bins_they_overlap() -> None:
    runs = [("fridge", 30.0, 150.0, 120.0), ("fridge", 170.0, 400.0, 60.0), (None, 0.0, 60.0, 1e3)]
    bins = binned_energy_from_intervals(runs, t0_s=0.0, n_bins=3, bin_s=60)
    assert set(bins) == {"fridge"}  # an unnamed run is assigned to nobody
    assert bins["fridge"].tolist() == pytest.approx([1.0, 2.0, 1.0 + 10 * 60 / 3600])
    # Outside the bins is cut off: 400 s runs past the last bin's end at 180 s.
    assert bins["fridge"].sum() == pytest.approx(120 * 120 / 3600 + 10 * 60 / 3600)


def test_per_device_error_and_report() -> None:
    errors = per_device_energy_error({"tv": 300.0, "pc": 50.0}, {"tv": 200.0})
    assert errors["tv"] == {"truth_kwh": 0.2, "estimated_kwh": 0.3, "relative_error": 0.5}
    assert errors["pc"]["relative_error"] is None
    report = energy_report({"tv": np.array([0.2, 0.1])}, {"tv": np.array([0.2, 0.2])}, 60)
    assert report["correctly_assigned"] == 0.875  # 1 - 0.1 / (2 * 0.4)
    assert report["truth_kwh"] == 0.0004 and report["assigned_kwh"] == 0.0003
