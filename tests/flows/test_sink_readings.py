"""The sink's readings: stored once however often at-least-once delivery hands them over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from flows.database import open_database
from flows.sink import write_items
from nilm.learning import event_row
from nilm.records import READING_COLUMNS, Event, ReadingBatch

T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)


def readings(first: int, n: int, watts: float) -> ReadingBatch:
    cols = {c: np.full(n, watts) for c in READING_COLUMNS}
    ts_us = int(T0.timestamp() * 1e6) + (first + np.arange(n, dtype=np.int64)) * 1_000_000
    return ReadingBatch("h", first + np.arange(n, dtype=np.int64), ts_us, cols)


def test_readings_sent_again_are_kept_once_and_the_rest_of_their_batch_is_written(
    tmp_path: Path,
) -> None:
    con = open_database(tmp_path / "r.duckdb")
    write_items(con.cursor(), [("readings", readings(0, 10, 100.0))])
    # a restart resends readings 5-9 (with other values, which must not replace the stored
    # ones) before new ones, in a batch with an event
    kettle = Event("e1", "h", T0 + timedelta(seconds=12), "a", 1500.0, 0.0, 1500.0, 12.5, 0.0,
                   100.0, 1600.0, 1500.0, 0.0, 120.0)  # fmt: skip
    write_items(
        con.cursor(), [("readings", readings(5, 10, 200.0)), event_row(kettle)]
    )
    stored = con.execute("SELECT seq, a_act_power FROM readings ORDER BY ts").fetchall()
    assert stored == [(i, 100.0 if i < 10 else 200.0) for i in range(15)]
    assert con.execute("SELECT event_id FROM events").fetchall() == [("e1",)]
    con.close()
