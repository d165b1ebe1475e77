"""The simulate writer: readings, and truth with its ramps that reads back as written."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from flows.recordings import TRUTH_COLUMNS, read_truth_csv, write_simulation
from nilm.simulator import HouseholdSimulator, SimulatorConfig


def test_truth_reads_back_as_the_simulator_made_it_ramps_included(tmp_path: Path) -> None:
    config = SimulatorConfig(seed=12)
    out, truth_path = tmp_path / "home.parquet", tmp_path / "truth.csv"
    n_readings, n_truth = write_simulation(config, 1.0, out, truth_path, progress=False)
    batch, truth = HouseholdSimulator(config).run(1.0)
    assert (n_readings, n_truth) == (len(batch), len(truth))
    assert pq.read_table(out).num_rows == len(batch)
    assert read_truth_csv(truth_path) == truth
    assert any(e.ramp_s > 0 for e in truth)  # soft starts and staircases say how long they take


def test_truth_without_ramps_reads_with_none(tmp_path: Path) -> None:
    path = tmp_path / "old.csv"
    path.write_text(",".join(TRUTH_COLUMNS) + "\n2026-01-05T00:00:01+00:00,tv,b,on,150.0\n")
    (event,) = read_truth_csv(path)
    assert (event.device, event.delta_p_w, event.ramp_s) == ("tv", 150.0, 0.0)
