"""Energy per device against sub-metered truth: NILMTK's "total energy correctly assigned".

Disaggregation is for telling a household where its energy goes, so beyond events and labels it
is judged on energy: each device's estimated energy (from the flow's activations: a run's energy
spread evenly over its duration) against the device's own metered power, in time bins.

Total energy correctly assigned (TECA; Kolter and Johnson 2011, as NILMTK computes it):

    TECA = 1 - sum_t sum_d |estimate(d, t) - truth(d, t)| / (2 * sum_t sum_d truth(d, t))

over every device d either side names and every time bin t. 1 is perfect; energy given to no
device (an unknown event, a missed run) counts against it as much as energy given to the wrong
one, and one misplaced watt-hour costs twice (missing where it belongs, extra where it is not),
hence the 2. Pure: arrays and intervals in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "binned_energy_from_intervals",
    "binned_energy_from_power",
    "energy_correctly_assigned",
    "energy_report",
    "per_device_energy_error",
]

FloatArray = npt.NDArray[np.float64]


def binned_energy_from_power(
    power_w: npt.ArrayLike, bin_s: int, sample_s: float = 1.0
) -> FloatArray:
    """Watt-hours per bin of `bin_s` seconds from power sampled every `sample_s` seconds.

    Parameters
    ----------
    power_w
        Power in W, evenly sampled from the first bin's start; NaN counts as 0.
    bin_s
        Bin width in seconds (a multiple of `sample_s`); the last bin may be partial.
    sample_s
        Sampling interval in seconds.

    Examples
    --------
    >>> binned_energy_from_power([3600.0] * 5, bin_s=2).tolist()
    [2.0, 2.0, 1.0]
    """
    p = np.nan_to_num(np.asarray(power_w, dtype=np.float64))
    per_bin = max(round(bin_s / sample_s), 1)
    n_bins = math.ceil(len(p) / per_bin)
    padded = np.zeros(n_bins * per_bin)
    padded[: len(p)] = p
    energy: FloatArray = padded.reshape(n_bins, per_bin).sum(axis=1) * sample_s / 3600.0
    return energy


def binned_energy_from_intervals(
    intervals: Iterable[tuple[str | None, float, float, float]],
    t0_s: float,
    n_bins: int,
    bin_s: int,
) -> dict[str, FloatArray]:
    """Watt-hours per device and bin from runs of constant power.

    Parameters
    ----------
    intervals
        (device, start_s, end_s, power_w): a run drawing `power_w` from `start_s` to `end_s`
        (seconds on the same clock as `t0_s`). Runs with no device are left out: their energy is
        assigned to nobody. The parts outside the bins are cut off.
    t0_s
        Start of the first bin.
    n_bins, bin_s
        Number and width (seconds) of the bins.

    Examples
    --------
    >>> bins = binned_energy_from_intervals([("kettle", 30.0, 90.0, 3600.0)], 0.0, 3, 60)
    >>> bins["kettle"].tolist()
    [30.0, 30.0, 0.0]
    """
    edges = t0_s + np.arange(n_bins + 1, dtype=np.float64) * bin_s
    out: dict[str, FloatArray] = {}
    for device, start, end, power in intervals:
        if device is None or end <= start:
            continue
        lo = np.clip(edges[:-1], start, end)
        hi = np.clip(edges[1:], start, end)
        wh = (hi - lo) * power / 3600.0
        if device in out:
            out[device] += wh
        else:
            out[device] = wh
    return out


def energy_correctly_assigned(
    estimated: Mapping[str, npt.ArrayLike], truth: Mapping[str, npt.ArrayLike]
) -> float | None:
    """NILMTK's total energy correctly assigned over devices and time bins.

    Parameters
    ----------
    estimated, truth
        Energy per device per bin (the same bins on both sides); a device missing on one side
        has zero energy there. None when the truth has no energy.

    Examples
    --------
    Half the kettle's energy given to the toaster:

    >>> energy_correctly_assigned({"kettle": [1.0, 0.0], "toaster": [1.0, 0.0]},
    ...                           {"kettle": [2.0, 0.0]})
    0.5
    >>> energy_correctly_assigned({"kettle": [2.0]}, {"kettle": [2.0]})
    1.0
    """
    total_truth = sum(float(np.sum(np.asarray(v, dtype=np.float64))) for v in truth.values())
    if total_truth <= 0.0:
        return None
    error = 0.0
    for device in sorted(set(estimated) | set(truth)):
        y = np.asarray(truth.get(device, 0.0), dtype=np.float64)
        y_hat = np.asarray(estimated.get(device, 0.0), dtype=np.float64)
        error += float(np.sum(np.abs(y_hat - y)))
    return round(1.0 - error / (2.0 * total_truth), 4)


def per_device_energy_error(
    estimated_wh: Mapping[str, float], truth_wh: Mapping[str, float]
) -> dict[str, dict[str, float | None]]:
    """Each device's total energy, estimated against true, in kWh, with the relative error.

    Parameters
    ----------
    estimated_wh, truth_wh
        Total watt-hours per device; a device missing on one side has 0 there. The relative
        error is (estimated - true) / true, None for a device with no true energy.

    Examples
    --------
    >>> per_device_energy_error({"kettle": 900.0}, {"kettle": 1000.0, "tv": 500.0})["kettle"]
    {'truth_kwh': 1.0, 'estimated_kwh': 0.9, 'relative_error': -0.1}
    """
    out: dict[str, dict[str, float | None]] = {}
    for device in sorted(set(estimated_wh) | set(truth_wh)):
        y = float(truth_wh.get(device, 0.0))
        y_hat = float(estimated_wh.get(device, 0.0))
        out[device] = {
            "truth_kwh": round(y / 1000.0, 4),
            "estimated_kwh": round(y_hat / 1000.0, 4),
            "relative_error": round((y_hat - y) / y, 4) if y > 0 else None,
        }
    return out


def energy_report(
    estimated: Mapping[str, FloatArray], truth: Mapping[str, FloatArray], bin_s: int
) -> dict[str, Any]:
    """The `"energy"` section of `nilm eval`: TECA, totals and each device's energy error.

    Parameters
    ----------
    estimated, truth
        Watt-hours per device per bin (`binned_energy_from_intervals`,
        `binned_energy_from_power`), on the same bins.
    bin_s
        The bins' width, reported with the figures.

    Examples
    --------
    >>> est = {"kettle": np.array([1.0, 0.0]), "toaster": np.array([1.0, 0.0])}
    >>> r = energy_report(est, {"kettle": np.array([2.0, 0.0])}, bin_s=60)
    >>> r["correctly_assigned"], r["truth_kwh"], r["per_device"]["kettle"]["relative_error"]
    (0.5, 0.002, -0.5)
    """
    est_wh = {d: float(np.sum(v)) for d, v in estimated.items()}
    true_wh = {d: float(np.sum(v)) for d, v in truth.items()}
    return {
        "correctly_assigned": energy_correctly_assigned(estimated, truth),
        "bin_s": bin_s,
        "truth_kwh": round(sum(true_wh.values()) / 1000.0, 4),
        "assigned_kwh": round(sum(est_wh.values()) / 1000.0, 4),
        "per_device": per_device_energy_error(est_wh, true_wh),
    }
