"""The `nilm` command as scripts use it (CONTRACT.md)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from flows.cli import main


def test_simulate_writes_logger_readings_and_truth(tmp_path: Path) -> None:
    out, truth = tmp_path / "sim.parquet", tmp_path / "truth.csv"
    assert main(["simulate", "--days", "0.5", "--seed", "3", "--out", str(out),
                 "--truth", str(truth)]) == 0  # fmt: skip
    table = pq.read_table(out)
    assert 40_000 < table.num_rows <= 43_200
    assert table.schema.field("timestamp_utc").type.tz == "UTC"
    with truth.open() as f:
        rows = list(csv.DictReader(f))
    # The contract's columns; more may follow (the simulator adds ramp_s).
    assert rows and set(rows[0]) >= {"ts", "device", "legs", "kind", "delta_p_w"}
    assert {r["kind"] for r in rows} <= {"on", "off", "step"}


def test_simulate_then_replay_then_replay_again(tmp_path: Path, capsys) -> None:
    out, db = tmp_path / "sim.csv", tmp_path / "x.duckdb"
    assert main(["simulate", "--days", "0.1", "--seed", "2", "--out", str(out)]) == 0
    assert main(["replay", str(out), "--db", str(db), "--home", "h1", "--quiet"]) == 0
    first = capsys.readouterr().out
    assert main(["replay", str(out), "--db", str(db), "--home", "h1", "--quiet"]) == 0
    con = duckdb.connect(str(db), read_only=True)
    n = con.execute("SELECT count(*), min(home_id) FROM readings").fetchone()
    assert n is not None and n[1] == "h1" and f"accepted {n[0]:,}" in first


def test_demo_of_a_set_length_runs_the_flow_and_stops(tmp_path: Path, capsys) -> None:
    db = tmp_path / "demo.duckdb"
    code = main(["demo", "--db", str(db), "--days", "0.3", "--backfill-days", "0.25",
                 "--speed", "100000", "--no-dashboard"])  # fmt: skip
    assert code == 0
    con = duckdb.connect(str(db), read_only=True)
    readings, events = con.execute(
        "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM events)"
    ).fetchone()
    assert readings > 0.29 * 86_400 and events > 10
    assert "readings" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["replay", "nope.parquet", "--db", "x.duckdb"], "no such file: nope.parquet"),
        (["run", "--config", "nope.toml"], "config file nope.toml does not exist"),
    ],
)
def test_expected_errors_are_one_clear_line(argv, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_setting_is_named(tmp_path: Path, capsys) -> None:
    config = tmp_path / "nilm.toml"
    config.write_text('home_id = "a"\nmin_event = 5\n')
    assert main(["run", "--config", str(config)]) == 2
    assert "unknown setting 'min_event'" in capsys.readouterr().err


def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    nilm = Path(sys.executable).with_name("nilm")
    proc = subprocess.Popen(
        [str(nilm), "demo", "--db", str(db), "--backfill-days", "0.05", "--speed", "50",
         "--no-dashboard"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # the banner is printed once the database is open
            lines.append(line)
            if line.startswith("simulating"):
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:  # never left running, whatever failed
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + out
    assert "Traceback" not in out and "readings" in out
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM events").fetchone() is not None


def test_eval_says_when_the_user_labels_held_out_devices(tmp_path: Path, capsys) -> None:
    out, truth = tmp_path / "sim.parquet", tmp_path / "truth.csv"
    assert main(["simulate", "--days", "0.3", "--seed", "3", "--out", str(out),
                 "--truth", str(truth)]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["eval", str(out), "--truth", str(truth), "--label-holdout-after", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["novelty"]["label_holdout_after"] == 3
