"""Event windows stored with their events: the flow's windows step and the sink's table."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import duckdb
import numpy as np
import pytest
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.dataflow import get_flow
from flows.sink import write_items
from nilm.batch.windows import PairedWindower, window_row
from nilm.detection import HomeEventDetector
from nilm.records import ReadingBatch, ReadingChunk
from nilm.schema import SCHEMA_SQL
from nilm.settings import Settings
from nilm.simulator import HouseholdSimulator, SimulatorConfig


def _busy_hour(home_id: str, seed: int = 5, hour: int = 20) -> ReadingBatch:
    """An evening hour of a simulated day (about 20 switches), from its first second."""
    day, _truth = HouseholdSimulator(SimulatorConfig(seed=seed, home_id=home_id)).day(0)
    start = int(day.ts_us[0]) + hour * 3_600_000_000
    keep = (day.ts_us >= start) & (day.ts_us < start + 3_600_000_000)
    return day[keep]


def _cut(batch: ReadingBatch, batch_s: int) -> list[ReadingBatch]:
    edges = np.searchsorted(batch.ts_us, np.arange(batch.ts_us[0], batch.ts_us[-1], batch_s * 1e6))
    return [batch[lo:hi] for lo, hi in zip(edges, [*edges[1:], len(batch)], strict=True)]


def _run(batch_s: int) -> list:
    chunks = [("casa", ReadingChunk("sim", b)) for b in _cut(_busy_hour("casa"), batch_s)]
    out: list = []
    run_main(get_flow(Settings(), TestingSource(chunks), TestingSink(out)))
    return out


@pytest.fixture(scope="module")
def hour_in_minutes() -> list:
    return _run(60)


def test_a_simulated_hour_gives_one_window_per_event(hour_in_minutes: list) -> None:
    events = {r["event_id"] for t, r in hour_in_minutes if t == "events" and not r["provisional"]}
    windows = [row for table, row in hour_in_minutes if table == "event_windows"]
    assert len(events) >= 5
    assert sorted(w["event_id"] for w in windows) == sorted(events)
    for w in windows:
        assert (w["home_id"], w["before_s"], w["channels"], w["samples"]) == ("casa", 30, 4, 120)
        assert len(w["window"]) == 4 * 120 and all(np.isfinite(w["window"]))
        values = np.array(w["window"]).reshape(4, 120)
        # Normalised: each channel's level before the event is removed.
        assert np.allclose(np.median(values[:, :30], axis=1), 0.0, atol=1e-6)
        # The step shows after the event's second on some channel.
        assert np.abs(values[:, 31:]).max() > 0.1


def test_windows_do_not_depend_on_batch_sizes(hour_in_minutes: list) -> None:
    def by_id(out: list) -> dict[str, list[float]]:
        return {r["event_id"]: r["window"] for t, r in out if t == "event_windows"}

    small, large = by_id(hour_in_minutes), by_id(_run(900))
    assert small.keys() == large.keys()
    assert all(np.array_equal(small[k], large[k]) for k in small)


def _stream(batch_s: int) -> list[tuple[ReadingBatch, list]]:
    detector = HomeEventDetector("h")
    return [(b, detector.update(b)) for b in _cut(_busy_hour("h"), batch_s)] + [
        (ReadingBatch.empty("h"), detector.flush())
    ]


def test_either_stream_may_come_first_and_the_state_stays_small() -> None:
    stream = _stream(30)
    readings_first, events_first = PairedWindower("h"), PairedWindower("h")
    a: list = []
    b: list = []
    largest_tail = 0
    for batch, events in stream:
        a += readings_first.on_readings(batch) + readings_first.on_events(events)
        b += events_first.on_events(events) + events_first.on_readings(batch)
        largest_tail = max(largest_tail, len(readings_first.windower.tail))
    a += readings_first.flush()
    b += events_first.flush()
    n_events = sum(len(events) for _, events in stream)
    assert n_events >= 3 and len(a) == len(b) == n_events
    assert all(np.array_equal(x.values, y.values) for x, y in zip(a, b, strict=True))
    # About 2-3 minutes of readings at 1 Hz, whatever the stream's length.
    assert largest_tail <= 240
    assert len(pickle.dumps(readings_first)) < 60_000


def test_window_rows_upsert_through_the_sink_as_a_list_column() -> None:
    con = duckdb.connect()
    con.execute(SCHEMA_SQL)
    windows: list = []
    windower = PairedWindower("h")
    for batch, events in _stream(600):
        windows += windower.on_readings(batch) + windower.on_events(events)
    windows += windower.flush()
    rows = [window_row(w) for w in windows]
    write_items(con, rows)
    write_items(con, rows)  # at-least-once delivery: the same rows again change nothing
    stored = con.execute(
        'SELECT event_id, ts, channels, samples, "window" FROM event_windows ORDER BY ts'
    ).fetchall()
    assert len(stored) == len(rows) >= 3
    first = min(windows, key=lambda w: w.ts)
    assert stored[0][0] == first.event_id and stored[0][1] == first.ts.astimezone(UTC)
    assert np.allclose(stored[0][4], first.values.ravel(), atol=1e-6)
    assert isinstance(stored[0][1], datetime)
