"""Provisional events through the real flow into DuckDB: the final table is what it would be
without them, however the readings are cut into batches and whatever a crash leaves behind."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
from bytewax.testing import TestingSource, run_main

from flows.database import open_database
from flows.dataflow import get_flow
from flows.sink import DuckDBSink, write_items
from nilm.detection import HomeEventDetector
from nilm.learning import HomeLearner, event_row
from nilm.provisional import SETTLE_TABLE, Settlement
from nilm.records import Event, ReadingBatch, ReadingChunk
from nilm.settings import Settings
from nilm.simulator import HouseholdSimulator, SimulatorConfig

# Every column but the wall-clock one.
COMPARED = (
    "event_id, home_id, ts, legs, delta_p_w, device, confidence, novelty, uncertainty, "
    "cluster_id, delta_q_var, p_before_w, p_after_w, inrush_peak_w, ramp_s, labelled, provisional"
)
# Chunks the source hands on at a time. The detector still sees each chunk alone (its step maps
# one chunk at a time), so cutting the hour into 1–3 readings tests what it did; the sink gets
# many chunks per transaction, as from a source that pages. One DuckDB commit per 1–3 readings
# made the `[1, 2, 3]` cut take 30 s of CPU and a minute or more of fsyncs, and tested nothing
# more.
SOURCE_BATCH = 200


def _busy_hour(seed: int = 5, hour: int = 20) -> ReadingBatch:
    day, _truth = HouseholdSimulator(SimulatorConfig(seed=seed, home_id="casa")).day(0)
    start = int(day.ts_us[0]) + hour * 3_600_000_000
    return day[(day.ts_us >= start) & (day.ts_us < start + 3_600_000_000)]


def _cut(batch: ReadingBatch, sizes: list[int]) -> list[ReadingBatch]:
    """Cut into batches of the given sizes, cycling through them."""
    out, lo, i = [], 0, 0
    while lo < len(batch):
        out.append(batch[lo : lo + sizes[i % len(sizes)]])
        lo += sizes[i % len(sizes)]
        i += 1
    return out


def _events_table(db: Path, batches: list[ReadingBatch], provisional: bool) -> tuple[list, Counter]:
    con = open_database(db)
    written: Counter[str] = Counter()
    try:
        settings = Settings(provisional_events=provisional)
        chunks = [("casa", ReadingChunk("sim", b)) for b in batches]
        source = TestingSource(chunks, batch_size=SOURCE_BATCH)
        run_main(get_flow(settings, source, DuckDBSink(con, written)))
        rows = con.execute(f"SELECT {COMPARED} FROM events ORDER BY event_id").fetchall()
        missing = con.execute("SELECT count(*) FROM events WHERE detected_at IS NULL").fetchone()
        assert missing == (0,)
    finally:
        con.close()
    return rows, written


@pytest.fixture(scope="module")
def hour() -> ReadingBatch:
    return _busy_hour()


@pytest.fixture(scope="module")
def without(hour: ReadingBatch, tmp_path_factory: pytest.TempPathFactory) -> list:
    rows, written = _events_table(tmp_path_factory.mktemp("off") / "off.duckdb", [hour], False)
    assert len(rows) >= 5 and written["provisional"] == 0
    return rows


@pytest.mark.parametrize("sizes", [[1, 2, 3], [7], [60, 13]])
def test_final_events_table_equals_a_run_without_provisional_events(
    hour: ReadingBatch, without: list, sizes: list[int], tmp_path: Path
) -> None:
    rows, written = _events_table(tmp_path / "on.duckdb", _cut(hour, sizes), True)
    # provisional rows were written on the way, and none is left
    assert written["provisional"] >= len(without) // 2
    assert rows == without


def test_a_crash_leftover_is_swept_and_the_table_equals_an_uncrashed_run(
    hour: ReadingBatch, without: list, tmp_path: Path
) -> None:
    """Rows written after the last snapshot are unknown to the restored detector: a restart
    that cuts the readings differently must still leave no provisional row behind."""
    db = tmp_path / "crash.duckdb"
    batches = _cut(hour, [1, 4])
    # the crashed run, step by step as the flow does it, dies without a snapshot after the
    # middle, once a provisional event is in the table
    detector = HomeEventDetector("casa", provisional=True)
    learner = HomeLearner("casa")
    items: list = []
    for i, b in enumerate(batches):
        items.append(("readings", b))
        answer = detector.update_live(b)
        for x in answer:
            items += [(SETTLE_TABLE, x.row())] if isinstance(x, Settlement) else learner.on_event(x)
        if i > len(batches) // 2 and any(getattr(x, "provisional", False) for x in answer):
            break
    # and one the restart surely never writes itself: a step the crashed run saw another way
    shown = next(x for x in reversed(answer) if isinstance(x, Event) and x.provisional)
    items.append(event_row(replace(shown, event_id="seen-only-before-the-crash")))
    con = open_database(db)
    try:
        write_items(con.cursor(), items)
        (left,) = con.execute("SELECT count(*) FROM events WHERE provisional").fetchone() or (0,)
    finally:
        con.close()
    assert left >= 2
    # the restart reads everything again, cut another way
    rows, _ = _events_table(db, _cut(hour, [5, 9]), True)
    assert rows == without


def test_old_database_files_get_the_new_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE events (event_id VARCHAR PRIMARY KEY, home_id VARCHAR NOT NULL, "
        "ts TIMESTAMPTZ NOT NULL, legs VARCHAR NOT NULL, delta_p_w DOUBLE NOT NULL, "
        "device VARCHAR, labelled BOOLEAN DEFAULT FALSE)"
    )
    con.execute("INSERT INTO events VALUES ('e1', 'h', '2026-01-05 00:00:00+00', 'a', 50, NULL, 0)")
    con.close()
    con = open_database(db)
    try:
        row = con.execute("SELECT provisional, detected_at FROM events").fetchone()
    finally:
        con.close()
    assert row == (False, None)
