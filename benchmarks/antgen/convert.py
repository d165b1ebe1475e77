"""ANTgen's per-appliance traces -> Shelly logger readings, truth events and sub-metered power.

ANTgen (https://pypi.org/project/antgen/ 0.4.1) writes each appliance's active power at 1 Hz,
built from AMBAL components fitted to measured appliances (constant, linear, decaying,
growing, noisy). A US split-phase panel sees them through a Shelly Pro 3EM; this module puts
them there:

- each appliance sits on leg `a`, `b` or both (`ab`, a 240 V load: half its power on each leg),
  with the power factor of its kind (`POWER_FACTOR`) giving reactive and apparent power;
- each leg carries an always-on base load, meter noise, a voltage that wanders over the day and
  sags with the leg's current, and the logger's timestamp jitter and gaps;
- the truth events are the appliance's state changes, taken from ANTgen's component boundaries
  (recorded by `driver.py`), not from the power alone: a step between components is an event, a
  component's own movement (a compressor's inrush decaying, a TV's picture-driven noise, a
  heater's slow growth) is not. Boundaries within `MERGE_GAP_S` of each other are one event
  (a multi-second inrush or a staircase shut-down), stamped where it begins, with its `ramp_s`;
- loads that wander with their content (`WANDERING`: TV, PC, amplifier, CD player) have only
  their on and off as truth events;
- each appliance's own power is kept (`submeter.parquet`) for the energy metric.

Everything random is drawn from the household's seed.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DAY_S = 86_400
# Typical power factors by kind: resistive heat near 1, motors and compressors lagging,
# electronics without power-factor correction low.
POWER_FACTOR = {
    "AMPLIFIER": 0.70,
    "BREADCUTTER": 0.85,
    "CDPLAYER": 0.55,
    "COFFEEMAKER": 0.99,
    "COOKINGSTOVE": 1.00,
    "DISHWASHER": 0.97,
    "DRYER": 0.98,
    "FREEZER": 0.78,
    "IRON": 1.00,
    "KETTLE": 1.00,
    "MICROWAVE": 0.92,
    "PC": 0.93,
    "PRINTER": 0.62,
    "REFRIGERATOR": 0.80,
    "TOASTER": 1.00,
    "TV": 0.65,
    "VACUUMCLEANER": 0.93,
    "WASHINGMACHINE": 0.72,
}
BASE_PF = 0.88
# Loads whose draw follows what they show or play (the picture, the music, the computation):
# ANTgen fits that movement with many components, but moving between them is not a change of
# state, so their truth has only their switching on and off (issue 10: "a wandering load makes
# no events while it wanders").
WANDERING = frozenset({"TV", "PC", "AMPLIFIER", "CDPLAYER"})
MERGE_GAP_S = 2  # boundaries this close belong to one event (a decaying inrush, a staircase)
MAX_RAMP_S = 8  # ... but one event spans at most this long
MIN_STEP_W = 10.0  # smaller state changes are left out of the truth
OFF_BELOW_W = 5.0  # an appliance drawing less than this is off
SETTLE_S = {"ON_OFF_DECAY": 10, "ON_OFF_GROWTH": 2}  # a component's own transient
SERVICE_OHM = 0.05  # service drop and panel: the voltage sag per ampere of leg current
GAPS_PER_DAY = 20.0
JITTER_S = 0.12
METER_NOISE_W = 1.5


def device_name(kind: str) -> str:
    """The truth's device name for an ANTgen appliance type (`TV` -> `tv`)."""
    return kind.lower()


def read_antgen_series(path: Path) -> np.ndarray:
    """One ANTgen output CSV (`time;watts`, no header) as float64 watts."""
    return pd.read_csv(path, sep=";", header=None, usecols=[1]).iloc[:, 0].to_numpy(np.float64)


def pack_raw(antgen_out: Path, kinds: list[str], target: Path) -> None:
    """ANTgen's own output, as read from its CSVs, in one file: `total`, each appliance type's
    trace, and the runs `driver.py` recorded (so that conversion can be redone without ANTgen)."""
    arrays = {kind: read_antgen_series(antgen_out / f"{kind}.csv") for kind in kinds}
    arrays["total"] = read_antgen_series(antgen_out / "total.csv")
    runs = (antgen_out / "runs.json").read_text()
    np.savez_compressed(target, runs_json=np.array(runs), **arrays)


def steady_levels(power: np.ndarray, components: list[dict[str, Any]]) -> np.ndarray:
    """The power with each component's own transient replaced by where it settles.

    A decaying component counts from its level `SETTLE_S` seconds in, a noisy one at its mean:
    differences of this trace across a boundary are the appliance's state changes.
    """
    level = power.copy()
    n = len(power)
    for c in components:
        s, e = int(c["start"]), min(int(c["end"]), n)
        if e <= s:
            continue
        if c["type"] == "NOISE":
            level[s:e] += power[s:e].mean() - power[s:e]
        elif c["type"] in SETTLE_S:
            k = min(SETTLE_S[c["type"]], e - s - 1)
            level[s : s + k] += power[s + k] - power[s : s + k]
    return level


def state_changes(
    power: np.ndarray, components: list[dict[str, Any]]
) -> list[tuple[int, str, float, int]]:
    """(second, kind, ΔP, ramp_s) of each state change of one appliance, from its components.

    Examples
    --------
    A compressor start that decays over three seconds, then the compressor stops:

    >>> p = np.zeros(40); p[10:12] = [900.0, 300.0]; p[12:30] = 80.0
    >>> comps = [{"type": "ON_OFF", "start": 10, "end": 11},
    ...          {"type": "ON_OFF", "start": 11, "end": 12},
    ...          {"type": "ON_OFF", "start": 12, "end": 30}]
    >>> state_changes(p, comps)
    [(10, 'on', 80.0, 2), (30, 'off', -80.0, 0)]
    """
    n = len(power)
    level = steady_levels(power, components)
    bounds = sorted({int(c[k]) for c in components for k in ("start", "end")})
    bounds = [t for t in bounds if 0 < t < n and abs(level[t] - level[t - 1]) >= 1.0]
    groups: list[list[int]] = []
    for t in bounds:
        if groups and t - groups[-1][-1] <= MERGE_GAP_S and t - groups[-1][0] <= MAX_RAMP_S:
            groups[-1].append(t)
        else:
            groups.append([t])
    out: list[tuple[int, str, float, int]] = []
    for g in groups:
        t0, t1 = g[0], g[-1]
        before, after = float(level[t0 - 1]), float(level[t1])
        delta = after - before
        if abs(delta) < MIN_STEP_W:
            continue
        if before < OFF_BELOW_W <= after:
            kind = "on"
        elif after < OFF_BELOW_W <= before:
            kind = "off"
        else:
            kind = "step"
        out.append((t0, kind, round(delta, 1), t1 - t0))
    return out


def _meter(
    p_leg: dict[str, np.ndarray], q_leg: dict[str, np.ndarray], base_w: dict[str, float],
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:  # fmt: skip
    n = len(p_leg["a"])
    t = np.arange(n)
    cols: dict[str, np.ndarray] = {}
    for j, leg in enumerate("ab"):
        base = base_w[leg] * (1.0 + 0.06 * np.sin(2 * np.pi * t / DAY_S + 1.3 * j))
        base_q = base * np.tan(np.arccos(BASE_PF))
        act = p_leg[leg] + base + rng.normal(0.0, METER_NOISE_W, n)
        react = q_leg[leg] + base_q + rng.normal(0.0, METER_NOISE_W, n)
        aprt = np.sqrt(act * act + react * react)
        wander = np.cumsum(rng.normal(0.0, 0.01, n))
        wander -= np.linspace(0.0, wander[-1], n)
        v_open = 121.5 + 1.4 * np.sin(2 * np.pi * t / DAY_S + 0.9 * j) + wander
        amps = aprt / v_open
        volts = np.round(v_open - SERVICE_OHM * amps + rng.normal(0.0, 0.05, n), 1)
        cols[f"{leg}_voltage"] = volts
        cols[f"{leg}_current"] = np.round(aprt / volts, 3)
        cols[f"{leg}_act_power"] = np.round(act, 1)
        cols[f"{leg}_aprt_power"] = np.round(aprt, 1)
        cols[f"{leg}_pf"] = np.round(np.clip(act / np.maximum(aprt, 1e-9), 0.0, 1.0), 2)
        cols[f"{leg}_freq"] = np.round(60.0 + rng.normal(0.0, 0.01, n), 2)
        cols[f"_{leg}_base"] = base
    return cols


def _logger_table(ts_ns: np.ndarray, cols: dict[str, np.ndarray]) -> pa.Table:
    arrays: dict[str, pa.Array] = {
        "timestamp_utc": pa.array(ts_ns, pa.timestamp("ns", tz="UTC")),
        "id": pa.array(np.zeros(len(ts_ns), np.int16)),
    }
    for leg in "ab":
        for f in ("voltage", "current", "act_power", "aprt_power", "pf", "freq"):
            arrays[f"{leg}_{f}"] = pa.array(cols[f"{leg}_{f}"].astype(np.float32))
    for f in ("current", "act_power", "aprt_power"):
        arrays[f"total_{f}"] = pa.array((cols[f"a_{f}"] + cols[f"b_{f}"]).astype(np.float32))
    return pa.table(arrays)


def convert_household(spec: dict[str, Any], raw: Path, out: Path) -> dict[str, Any]:
    """Writes `readings.parquet`, `truth.csv`, `submeter.parquet`, `activations.csv` to `out`.

    `raw` is ANTgen's output packed by `pack_raw` (each appliance type's trace, `total`, runs).
    Returns the household's metadata, with ANTgen's energy per appliance next to the converted.
    """
    out.mkdir(parents=True, exist_ok=True)
    days = int(spec["days"])
    n = days * DAY_S
    start = datetime.fromisoformat(spec["start_utc"])
    start_ns = int(start.timestamp()) * 1_000_000_000
    rng = np.random.default_rng([int(spec["seed"]), 7919])
    packed = np.load(raw)
    runs = json.loads(str(packed["runs_json"]))["runs"]
    kinds = list(spec["devices"])
    legs = {k: spec["legs"][k] for k in kinds}
    p_leg = {"a": np.zeros(n), "b": np.zeros(n)}
    q_leg = {"a": np.zeros(n), "b": np.zeros(n)}
    own: dict[str, np.ndarray] = {}
    truth: list[tuple[int, str, str, str, float, int]] = []
    activations: list[tuple[str, int, int, float]] = []
    clipped_wh: dict[str, float] = {}
    for kind in kinds:
        raw_p = packed[kind]
        if len(raw_p) != n:
            raise ValueError(f"{kind}.csv has {len(raw_p)} samples, expected {n}")
        # A few AMBAL fits dip below zero for a second; a meter sees no negative load.
        p = np.clip(raw_p, 0.0, None)
        clipped_wh[kind] = float((p - raw_p).sum() / 3600.0)
        own[kind] = p
        tan_phi = float(np.tan(np.arccos(POWER_FACTOR[kind])))
        for leg in legs[kind]:
            p_leg[leg] += p / len(legs[kind])
            q_leg[leg] += p * tan_phi / len(legs[kind])
        comps = [c for r in runs if r["appliance"] == kind for c in r["components"]]
        for t, ev_kind, delta, ramp in state_changes(p, comps):
            if kind in WANDERING and ev_kind == "step":
                continue
            truth.append((t, device_name(kind), legs[kind], ev_kind, delta, ramp))
        for r in runs:
            if r["appliance"] == kind and r["components"]:
                s = r["components"][0]["start"]
                e = min(r["components"][-1]["end"], n)
                activations.append((device_name(kind), s, e, float(p[s:e].sum() / 3600.0)))
    cols = _meter(p_leg, q_leg, spec["base_w"], rng)

    # The logger's gaps (a sample lost now and then) and its sub-second jitter.
    keep = np.ones(n, dtype=bool)
    n_gaps = int(rng.poisson(GAPS_PER_DAY * days))
    for s, length in zip(
        rng.integers(1, n, n_gaps).tolist(), rng.choice([1, 1, 1, 2, 3], n_gaps).tolist(),
        strict=True,
    ):  # fmt: skip
        keep[s : s + length] = False
    # Whole microseconds: the project's reader keeps timestamps at that resolution.
    jitter_ns = (rng.uniform(0.0, JITTER_S, n) * 1e6).astype(np.int64) * 1000
    ts_ns = start_ns + np.arange(n, dtype=np.int64) * 1_000_000_000 + jitter_ns
    table = _logger_table(ts_ns[keep], {k: v[keep] for k, v in cols.items()})
    pq.write_table(table, out / "readings.parquet", compression="zstd")

    sub = {"timestamp_utc": pa.array(start_ns + np.arange(n, dtype=np.int64) * 1_000_000_000,
                                     pa.timestamp("ns", tz="UTC"))}  # fmt: skip
    for kind in kinds:
        sub[device_name(kind)] = pa.array(own[kind].astype(np.float32))
    pq.write_table(pa.table(sub), out / "submeter.parquet", compression="zstd")

    truth.sort(key=lambda e: (e[0], e[1]))
    with (out / "truth.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ts", "device", "legs", "kind", "delta_p_w", "ramp_s"])
        for t, dev, lg, ev_kind, delta, ramp in truth:
            w.writerow([(start + timedelta(seconds=t)).isoformat(), dev, lg, ev_kind, delta, ramp])
    activations.sort(key=lambda a: (a[1], a[0]))
    with (out / "activations.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["device", "start_ts", "end_ts", "energy_wh"])
        for dev, s, e, wh in activations:
            w.writerow([
                dev, (start + timedelta(seconds=s)).isoformat(),
                (start + timedelta(seconds=e)).isoformat(), round(wh, 3),
            ])  # fmt: skip

    return {
        "name": spec["name"],
        "seed": int(spec["seed"]),
        "days": days,
        "held_out": bool(spec.get("held_out", False)),
        "start_utc": start.isoformat(),
        "n_readings": int(keep.sum()),
        "n_truth_events": len(truth),
        "devices": {
            device_name(k): {"model": spec["devices"][k], "legs": legs[k], "pf": POWER_FACTOR[k]}
            for k in kinds
        },
        "energy_check": energy_check(packed, out, kinds, cols, keep, clipped_wh),
    }


def energy_check(
    packed: Any, out: Path, kinds: list[str], cols: dict[str, np.ndarray], keep: np.ndarray,
    clipped_wh: dict[str, float],
) -> dict[str, dict[str, float]]:  # fmt: skip
    """ANTgen's energy per appliance against the converted files, read back.

    Per appliance: ANTgen's CSV against `submeter.parquet` (less what clipping at 0 W added).
    `_aggregate`: ANTgen's `total.csv` against the active power of both legs in
    `readings.parquet`, less the base load this converter added, over the samples kept.
    """
    sub = pq.read_table(out / "submeter.parquet")
    check: dict[str, dict[str, float]] = {}
    for kind in kinds:
        antgen_wh = float(packed[kind].sum() / 3600.0)
        conv_wh = float(sub.column(device_name(kind)).to_numpy().astype(np.float64).sum() / 3600.0)
        conv_wh -= clipped_wh[kind]
        check[device_name(kind)] = {
            "antgen_kwh": round(antgen_wh / 1000.0, 4),
            "converted_kwh": round(conv_wh / 1000.0, 4),
            "relative_error": (conv_wh - antgen_wh) / antgen_wh if antgen_wh else 0.0,
        }
    total = packed["total"][keep]
    readings = pq.read_table(out / "readings.parquet")
    legs_w = sum(readings.column(f"{leg}_act_power").to_numpy().astype(np.float64) for leg in "ab")
    base = (cols["_a_base"] + cols["_b_base"])[keep]
    antgen_wh = float(total.sum() / 3600.0)
    conv_wh = float((legs_w - base).sum() / 3600.0) - sum(clipped_wh.values())
    check["_aggregate"] = {
        "antgen_kwh": round(antgen_wh / 1000.0, 4),
        "converted_kwh": round(conv_wh / 1000.0, 4),
        "relative_error": (conv_wh - antgen_wh) / antgen_wh if antgen_wh else 0.0,
    }
    return check
