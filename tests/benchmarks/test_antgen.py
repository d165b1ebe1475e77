"""ANTgen households: the converter's contract, and `nilm eval` end to end on one of them.

The household is `t1_short` (benchmarks/antgen/households/t1_short.toml, one day), converted
from ANTgen's own output committed in `tests/fixtures/antgen/t1_short.antgen.npz` (see
benchmarks/antgen/README.md for how it was made), so these tests need no ANTgen environment.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import tomllib
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from flows.eval import read_submeter, run_eval
from flows.recordings import read_truth_csv

REPO = Path(__file__).resolve().parents[2]
ANTGEN = REPO / "benchmarks" / "antgen"
FIXTURE = REPO / "tests" / "fixtures" / "antgen" / "t1_short.antgen.npz"


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


convert = _module("antgen_convert", ANTGEN / "convert.py")


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return tomllib.loads((ANTGEN / "households" / "t1_short.toml").read_text())


@pytest.fixture(scope="module")
def household(tmp_path_factory: pytest.TempPathFactory, spec: dict[str, Any]) -> Path:
    out = tmp_path_factory.mktemp("antgen") / "t1_short"
    meta = convert.convert_household(spec, FIXTURE, out)
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def _meta(household: Path) -> dict[str, Any]:
    return json.loads((household / "meta.json").read_text())  # type: ignore[no-any-return]


def _readings(household: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(household / "readings.parquet")
    return {c: table.column(c).to_numpy() for c in table.column_names}


def _seconds(household: Path, spec: dict[str, Any], cols: dict[str, np.ndarray]) -> np.ndarray:
    """Each reading's whole second since the household's start."""
    t0 = np.datetime64(spec["start_utc"][:19], "ns")
    return ((cols["timestamp_utc"].astype("datetime64[ns]") - t0) // np.timedelta64(1, "s")).astype(
        int
    )


def test_readings_have_the_shelly_logger_columns(household: Path, shared_data: Path) -> None:
    ours = pq.read_schema(household / "readings.parquet")
    real = pq.read_schema(shared_data / "shelly_pro3em_2025-12-12_08.parquet")
    assert ours.names == real.names
    for name in real.names:
        if name != "timestamp_utc":
            assert ours.field(name).type == real.field(name).type, name
    assert str(ours.field("timestamp_utc").type) == "timestamp[ns, tz=UTC]"


def test_readings_are_1hz_utc_with_a_few_gaps(household: Path, spec: dict[str, Any]) -> None:
    cols = _readings(household)
    sec = _seconds(household, spec, cols)
    assert sec[0] >= 0 and sec[-1] < 86_400
    steps = np.diff(sec)
    assert np.all(steps >= 1)  # strictly increasing, one reading per second at most
    assert np.median(steps) == 1
    assert 86_400 > len(sec) > 0.99 * 86_400  # the logger's gaps, but few


def test_240v_loads_split_over_both_legs_and_others_stay_on_theirs(
    household: Path, spec: dict[str, Any]
) -> None:
    sub = pq.read_table(household / "submeter.parquet")
    cols = _readings(household)
    sec = _seconds(household, spec, cols)
    legs = spec["legs"]
    assert "ab" in legs.values() and {"a", "b"} <= set(legs.values())
    # Each leg's power less its base load is its appliances' power: 240 V ones count half.
    for leg in "ab":
        expected = np.zeros(86_400)
        for kind, on in legs.items():
            if leg in on:
                expected += sub.column(kind.lower()).to_numpy().astype(float) / len(on)
        measured = cols[f"{leg}_act_power"].astype(float)
        residual = measured - expected[sec]
        base = spec["base_w"][leg]
        assert np.median(residual) == pytest.approx(base, rel=0.07)
        assert np.percentile(np.abs(residual - np.median(residual)), 99) < 12.0


def test_voltage_sags_with_current(household: Path, spec: dict[str, Any]) -> None:
    cols = _readings(household)
    at = {int(v): i for i, v in enumerate(_seconds(household, spec, cols))}
    t0 = datetime.fromisoformat(spec["start_utc"])
    sags = []
    for t in read_truth_csv(household / "truth.csv"):
        s = int((t.ts - t0).total_seconds())
        if abs(t.delta_p_w) < 500 or s - 1 not in at or s + 1 not in at:
            continue
        for leg in t.legs:
            before, after = at[s - 1], at[s + 1]
            d_volts = cols[f"{leg}_voltage"][after] - cols[f"{leg}_voltage"][before]
            d_amps = cols[f"{leg}_current"][after] - cols[f"{leg}_current"][before]
            sags.append(d_volts / d_amps)
    assert len(sags) >= 5
    # Ohm's law over the service drop: the voltage falls as the leg's current rises.
    assert np.median(sags) == pytest.approx(-convert.SERVICE_OHM, rel=0.5)
    for leg in "ab":
        assert np.all(np.abs(cols[f"{leg}_voltage"] - 121.5) < 6.0)
        pf = cols[f"{leg}_pf"].astype(float)
        assert np.all((pf > 0.0) & (pf <= 1.0))


def test_truth_events_are_steps_of_the_appliances_own_power(
    household: Path, spec: dict[str, Any]
) -> None:
    with (household / "truth.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(read_truth_csv(household / "truth.csv")) == len(rows) > 100
    assert {r["kind"] for r in rows} == {"on", "off", "step"}
    sub = pq.read_table(household / "submeter.parquet")
    t0 = datetime.fromisoformat(spec["start_utc"])
    for r in rows:
        own = sub.column(r["device"]).to_numpy().astype(float)
        s = int((datetime.fromisoformat(r["ts"]) - t0).total_seconds())
        end = s + int(r["ramp_s"])
        assert own[s] != own[s - 1], r  # the step begins exactly at ts
        assert r["legs"] == spec["legs"][r["device"].upper()]
        if r["kind"] == "on":
            assert own[s - 1] < 5.0 <= own[end], r
        elif r["kind"] == "off":
            assert own[s - 1] >= 5.0 > own[end : end + 11].min(), r
        else:
            assert own[s - 1] >= 5.0 and own[end : end + 11].max() >= 5.0, r


def test_a_decaying_inrush_and_a_staircase_are_one_event_each() -> None:
    p = np.zeros(60)
    p[10:16] = [884.0, 305.0, 141.0, 94.0, 80.0, 76.0]
    p[16:40] = 76.0
    p[40:45] = [60.0, 45.0, 30.0, 15.0, 0.0]
    comps = [{"type": "ON_OFF", "start": s, "end": s + 1} for s in range(10, 16)]
    comps += [{"type": "ON_OFF", "start": 16, "end": 40}]
    comps += [{"type": "ON_OFF", "start": s, "end": s + 1} for s in range(40, 45)]
    assert convert.state_changes(p, comps) == [(10, "on", 76.0, 5), (40, "off", -76.0, 4)]


def test_a_noisy_component_makes_no_events_while_it_wanders() -> None:
    rng = np.random.default_rng(3)
    p = np.zeros(400)
    p[50:350] = 120.0 + rng.normal(0.0, 25.0, 300)
    comps = [{"type": "NOISE", "start": 50, "end": 350}]
    changes = convert.state_changes(p, comps)
    assert [(t, k) for t, k, _, _ in changes] == [(50, "on"), (350, "off")]
    assert changes[0][2] == pytest.approx(120.0, abs=10.0)


def test_converted_energy_equals_antgens(household: Path) -> None:
    check = _meta(household)["energy_check"]
    devices = [d for d in check if not d.startswith("_")]
    assert len(devices) == 16
    for d in devices:
        assert abs(check[d]["relative_error"]) < 1e-6, d
    assert abs(check["_aggregate"]["relative_error"]) < 1e-3
    assert check["_aggregate"]["antgen_kwh"] > 1.0


@pytest.mark.slow
def test_nilm_eval_on_an_antgen_household(household: Path) -> None:
    result = run_eval(
        [household / "readings.parquet"],
        household / "truth.csv",
        label_budget=10,
        submeter_path=household / "submeter.parquet",
    )
    # Floors well below what the flow reaches, so that a broken chain fails, not a tuned one.
    assert result["events"]["f1"] > 0.8
    assert result["classification"]["macro_f1"] > 0.3
    energy = result["energy"]
    assert 0.3 < energy["correctly_assigned"] <= 1.0
    sub = read_submeter(household / "submeter.parquet")
    truth_kwh = sum(float(p.sum()) for p in sub.power_w.values()) / 3.6e6
    assert energy["truth_kwh"] == pytest.approx(truth_kwh, rel=1e-4)
    assert set(energy["per_device"]) >= set(sub.power_w)


def test_households_are_complete_and_at_least_two_are_held_out() -> None:
    held_out = []
    for path in sorted((ANTGEN / "households").glob("*.toml")):
        spec = tomllib.loads(path.read_text())
        assert spec["name"] == path.stem
        assert set(spec["legs"]) == set(spec["devices"]), path.name
        assert set(spec["legs"].values()) <= {"a", "b", "ab"}
        assert set(spec["devices"]) <= set(convert.POWER_FACTOR), path.name
        for conf in spec["users"].values():
            assert (ANTGEN / "users" / conf).is_file(), conf
        if spec["held_out"]:
            held_out.append(spec["name"])
            people = [c for c in spec["users"].values() if not c.startswith("home_")]
            assert 2 <= len(people) <= 4 and 3 <= spec["days"] <= 7, path.name
    assert len(held_out) >= 2
