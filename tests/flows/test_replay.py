"""`nilm replay`: every row accounted for, hostile files kept aside, replays change nothing."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.app import replay
from flows.recordings import logger_table
from nilm.records import READING_COLUMNS
from nilm.schema import TABLES
from nilm.settings import Settings
from nilm.simulator import HouseholdSimulator, SimulatorConfig


def snapshot(db: Path) -> dict[str, list]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        # received_at is when a rejection was first seen; everything else must be identical.
        return {
            t: con.execute(
                f"SELECT * EXCLUDE (received_at) FROM {t} ORDER BY ALL" if t == "rejected"
                else f"SELECT * FROM {t} ORDER BY ALL"
            ).fetchall()
            for t in TABLES
        }
    finally:
        con.close()


def test_real_recording_is_stored_whole_and_a_second_replay_changes_nothing(
    shared_data: Path, tmp_path: Path
) -> None:
    files = sorted(shared_data.glob("shelly_pro3em_2025-12-12_0*.parquet"))
    settings = Settings(db_path=str(tmp_path / "x.duckdb"))
    first = replay(files, settings, progress=False)
    assert first.rows_read == 7185 == first.accepted + first.rejected
    before = snapshot(tmp_path / "x.duckdb")
    assert len(before["readings"]) == first.accepted and before["events"]
    second = replay(files, settings, progress=False)
    assert second.rows_read == first.rows_read
    assert snapshot(tmp_path / "x.duckdb") == before


def test_redd_mains_replay(shared_data: Path, tmp_path: Path) -> None:
    settings = Settings(db_path=str(tmp_path / "r.duckdb"), home_id="redd1")
    summary = replay([shared_data / "redd_house1_mains_2011-05-01.csv"], settings, progress=False)
    assert summary.rows_read == 22454 == summary.accepted + summary.rejected
    con = duckdb.connect(settings.db_path, read_only=True)
    nulls = con.execute("SELECT count(*) FROM readings WHERE a_voltage IS NULL").fetchone()
    assert nulls == (summary.accepted,)  # REDD has no voltage: NULL, not an invented 120 V


def _simulated_rows(n: int) -> pa.Table:
    batch, _ = HouseholdSimulator(SimulatorConfig(seed=8)).run(n / 86_400)
    return logger_table(batch)


def test_hostile_files_are_rejected_with_reasons_and_good_rows_around_them_stored(
    tmp_path: Path,
) -> None:
    good = _simulated_rows(600)
    # A CSV with bad rows in the middle: NaN, negative S, |pf| > 1, low voltage, a duplicate
    # and an out-of-order timestamp, an unparseable value and a row cut short.
    rows = good.to_pylist()
    header = good.column_names
    lines = [",".join(header)]
    for i, row in enumerate(rows[:300]):
        values = [row[c] for c in header]
        values[0] = row["timestamp_utc"].isoformat()
        lines.append(",".join(str(v) for v in values))
        if i == 10:
            lines.append(lines[-1].replace(str(row["a_act_power"]), "nan", 1))  # duplicate+NaN
    bad = {
        20: ("a_aprt_power", -1.0), 30: ("b_pf", 1.5), 40: ("a_voltage", 12.0),
        50: ("b_act_power", "garbage"),
    }  # fmt: skip
    for i, (col, value) in bad.items():
        cells = lines[i + 2].split(",")
        cells[header.index(col)] = str(value)
        lines[i + 2] = ",".join(cells)
    lines[61] = lines[60]  # duplicate timestamp
    lines[71], lines[72] = lines[72], lines[71]  # out of order
    lines.append(lines[-1][: len(lines[-1]) // 2])  # truncated last line
    csv_path = tmp_path / "hostile.csv"
    csv_path.write_text("\n".join(lines) + "\n")

    # Parquet: wrong columns, an empty file, a truncated file, then a good file.
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"time": [1, 2], "watts": [3.0, 4.0]}), wrong)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    truncated = tmp_path / "truncated.parquet"
    pq.write_table(good.slice(300, 100), tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    tail = tmp_path / "tail.parquet"
    pq.write_table(good.slice(400, 200), tail)

    settings = Settings(db_path=str(tmp_path / "h.duckdb"))
    files = [csv_path, wrong, empty, truncated, tail]
    summary = replay(files, settings, progress=False)
    con = duckdb.connect(settings.db_path, read_only=True)
    reasons = [r for (r,) in con.execute("SELECT reason FROM rejected ORDER BY ALL").fetchall()]
    stored = con.execute("SELECT count(*) FROM readings").fetchone()
    assert stored == (summary.accepted,)
    expected_fragments = [
        "negative apparent power", "|pf| above 1", "voltage outside", "is not a number",
        "not a finite number", "duplicate timestamp", "out-of-order timestamp",
        "file wrong.parquet cannot be read", "file empty.csv cannot be read: the file is empty",
        "file truncated.parquet cannot be read",
    ]  # fmt: skip
    for fragment in expected_fragments:
        assert any(fragment in r for r in reasons), (fragment, reasons)
    # Every good row of the CSV and of the good Parquet file is there.
    ts_stored = {t for (t,) in con.execute("SELECT epoch_us(ts) FROM readings").fetchall()}
    good_ts = good.column("timestamp_utc").cast(pa.int64()).to_numpy() // 1000
    bad_rows = set(bad) | {10, 59, 69, 70, 299}
    expected_good = {int(t) for i, t in enumerate(good_ts[:300]) if i not in bad_rows}
    expected_good |= {int(t) for t in good_ts[400:600]}
    missing = expected_good - ts_stored
    assert not missing, sorted(missing)[:5]


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        replay([tmp_path / "nope.parquet"], Settings(db_path=str(tmp_path / "d.duckdb")))


def test_reading_columns_match_the_real_logger(shared_data: Path) -> None:
    real = pq.read_schema(next(shared_data.glob("shelly_pro3em_*.parquet")))
    ours = _simulated_rows(10).schema
    assert [(f.name, f.type) for f in ours] == [(f.name, f.type) for f in real]
    assert set(READING_COLUMNS) <= set(real.names)

