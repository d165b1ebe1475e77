"""Bytewax sources: recorded files, the simulator, and the labels users confirm.

Each source resumes from a snapshot of its position, so with Bytewax recovery and the idempotent
sink a restart neither loses nor duplicates a row.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from nilm.parsing import (
    LOGGER_COLUMNS,
    ParseError,
    parse_logger_rows,
    parse_redd_rows,
    sniff_format,
)
from nilm.records import (
    READING_COLUMNS,
    Label,
    ReadingBatch,
    ReadingChunk,
    Rejection,
)
from nilm.simulator import DAY_S, HouseholdSimulator, SimulatorConfig

__all__ = [
    "FileReplaySource",
    "LabelSource",
    "SimulatorSource",
    "StoppableSource",
    "count_rows",
    "read_file_chunks",
    "stored_labels",
]

log = logging.getLogger(__name__)

SourceItem = tuple[str, ReadingChunk]


def count_rows(path: Path) -> int:
    """Rows in a recording, for progress bars; 0 when the file cannot be read."""
    try:
        if path.suffix.lower() == ".parquet":
            return int(pq.ParquetFile(path).metadata.num_rows)
        with path.open("rb") as f:
            return max(sum(1 for _ in f) - 1, 0)
    except (OSError, pa.ArrowException):
        return 0


def _parquet_chunks(
    path: Path, home_id: str, skip: int, chunk_rows: int
) -> Iterator[tuple[int, ReadingChunk]]:
    source = path.name
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    missing = [c for c in LOGGER_COLUMNS if c not in names]
    if missing:
        raise ParseError(f"columns {missing} are missing (found {names[:10]})")
    done = 0
    for record_batch in pf.iter_batches(batch_size=chunk_rows, columns=list(LOGGER_COLUMNS)):
        n = record_batch.num_rows
        if done + n <= skip:
            done += n
            continue
        table = pa.Table.from_batches([record_batch]).slice(max(skip - done, 0))
        first = done + max(skip - done, 0)
        done += n
        yield done, _arrow_chunk(table, home_id, source, first)


def _arrow_chunk(table: pa.Table, home_id: str, source: str, first: int) -> ReadingChunk:
    n = table.num_rows
    seq = np.arange(first, first + n, dtype=np.int64)
    ts_col = table.column("timestamp_utc")
    rejections: list[Rejection] = []
    if pa.types.is_timestamp(ts_col.type):
        ts = ts_col.cast(pa.timestamp("us", tz="UTC"))
        valid = ts.is_valid().to_numpy(zero_copy_only=False)
        ts_us = ts.fill_null(0).cast(pa.int64()).to_numpy(zero_copy_only=False)
    else:
        # Strings or numbers: the row parser reads them one by one and says what is wrong.
        batch, rejections = parse_logger_rows(table.to_pylist(), home_id, source, first)
        return ReadingChunk(source, batch, tuple(rejections))
    columns = {}
    for name in READING_COLUMNS:
        col = table.column(name)
        try:
            col = col.cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            batch, rejections = parse_logger_rows(table.to_pylist(), home_id, source, first)
            return ReadingChunk(source, batch, tuple(rejections))
        columns[name] = col.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls → NaN
    for i in np.flatnonzero(~valid).tolist():
        rejections.append(
            Rejection(
                home_id,
                f"{source}#{first + i}",
                str(table.slice(i, 1).to_pylist()[0]),
                "timestamp_utc is empty",
            )
        )
    batch = ReadingBatch(home_id, seq, ts_us.astype(np.int64), columns)
    return ReadingChunk(source, batch[valid], tuple(rejections))


def _csv_chunks(
    path: Path, home_id: str, skip: int, chunk_rows: int
) -> Iterator[tuple[int, ReadingChunk]]:
    source = path.name
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ParseError("the file is empty")
        fmt = sniff_format(header)
        done = 0
        while True:
            rows = []
            for row in reader:
                rows.append(row)
                if len(rows) >= chunk_rows:
                    break
            if not rows:
                return
            first = done
            done += len(rows)
            if done <= skip:
                continue
            rows = rows[max(skip - first, 0) :]
            first = max(first, skip)
            if fmt == "redd":
                batch, rejections = parse_redd_rows(rows, home_id, source, first)
            else:
                dict_rows = [
                    dict(zip(header, row, strict=False))
                    if len(row) == len(header)
                    else {"__row__": row}
                    for row in rows
                ]
                batch, rejections = parse_logger_rows(dict_rows, home_id, source, first)
            yield done, ReadingChunk(source, batch, tuple(rejections))


def read_file_chunks(
    path: Path, home_id: str, skip: int = 0, chunk_rows: int = 20_000
) -> Iterator[tuple[int, ReadingChunk]]:
    """Chunks of a recording with the count of rows read after each; never raises on bad data.

    A file that cannot be read at all (empty, truncated, wrong columns) becomes one rejection
    naming the file and the reason, and the replay goes on with the next file.
    """
    reader = _parquet_chunks if path.suffix.lower() == ".parquet" else _csv_chunks
    try:
        yield from reader(path, home_id, skip, chunk_rows)
    except (ParseError, OSError, pa.ArrowException, UnicodeError, csv.Error) as err:
        log.warning("cannot read %s: %s", path, err)
        reason = f"file {path.name} cannot be read: {err}"
        rejection = Rejection(home_id, f"{path.name}#file", str(path), reason)
        yield skip, ReadingChunk(path.name, ReadingBatch.empty(home_id), (rejection,))


class _FilePartition(StatefulSourcePartition[SourceItem, tuple[int, int]]):
    def __init__(
        self,
        paths: list[Path],
        home_id: str,
        chunk_rows: int,
        resume: tuple[int, int] | None,
        on_rows: Callable[[int], None] | None,
    ) -> None:
        self.paths = paths
        self.home_id = home_id
        self.chunk_rows = chunk_rows
        self.on_rows = on_rows
        self.file_index, self.rows_done = resume if resume is not None else (0, 0)
        self.chunks: Iterator[tuple[int, ReadingChunk]] | None = None

    def next_batch(self) -> list[SourceItem]:
        while self.file_index < len(self.paths):
            if self.chunks is None:
                self.chunks = read_file_chunks(
                    self.paths[self.file_index], self.home_id, self.rows_done, self.chunk_rows
                )
            item = next(self.chunks, None)
            if item is None:
                self.file_index += 1
                self.rows_done = 0
                self.chunks = None
                continue
            rows_done, chunk = item
            if self.on_rows is not None:
                self.on_rows(rows_done - self.rows_done)
            self.rows_done = rows_done
            return [(self.home_id, chunk)]
        raise StopIteration

    def snapshot(self) -> tuple[int, int]:
        return (self.file_index, self.rows_done)


class FileReplaySource(FixedPartitionedSource[SourceItem, tuple[int, int]]):
    """Recorded readings of one home, file after file, in chunks of `chunk_rows`.

    One partition reads all files in order, because a home's readings must arrive in time order.
    `on_rows` is told how many rows each chunk consumed (for a progress bar).

    Each chunk costs a few DuckDB transactions downstream and a provisional pass of the
    detector; chunks of 100,000 rows (a day at 1 Hz) took a simulated week's replay from 14.6
    to 12.2 CPU seconds against 20,000, with the same rows stored.
    """

    def __init__(
        self,
        paths: list[Path],
        home_id: str,
        chunk_rows: int = 100_000,
        on_rows: Callable[[int], None] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.home_id = home_id
        self.chunk_rows = chunk_rows
        self.on_rows = on_rows

    def list_parts(self) -> list[str]:
        return [f"replay-{self.home_id}"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: tuple[int, int] | None
    ) -> _FilePartition:
        return _FilePartition(self.paths, self.home_id, self.chunk_rows, resume_state, self.on_rows)


class _SimulatorPartition(StatefulSourcePartition[SourceItem, int]):
    def __init__(self, source: SimulatorSource, resume: int | None) -> None:
        self.source = source
        self.sim = HouseholdSimulator(source.config)
        self.position_s = resume if resume is not None else 0
        self.live_since: tuple[datetime, int] | None = None
        self.day_index = -1
        self.day_batch = ReadingBatch.empty(source.config.home_id)

    def _target_s(self) -> int:
        src = self.source
        backfill = int(src.backfill_days * DAY_S)
        if self.position_s < backfill:
            return min(self.position_s + src.batch_s, backfill)
        now = datetime.now(UTC)
        if self.live_since is None:
            self.live_since = (now, self.position_s)
            # What ties simulated time to the wall clock, for whoever measures delays.
            log.info(
                "simulator live: simulated %s is wall %s, at %gx",
                (src.config.start + timedelta(seconds=self.position_s)).isoformat(),
                now.isoformat(),
                src.speed,
            )
        wall0, sim0 = self.live_since
        return sim0 + int((now - wall0).total_seconds() * src.speed)

    def next_batch(self) -> list[SourceItem]:
        src = self.source
        end = None if src.days is None else int(src.days * DAY_S)
        if end is not None and self.position_s >= end:
            src.done = True
            raise StopIteration
        target = self._target_s() if end is None else min(self._target_s(), end)
        target = min(target, (self.position_s // DAY_S + 1) * DAY_S)  # one day at a time
        if target <= self.position_s:
            return []
        day = self.position_s // DAY_S
        if day != self.day_index:
            self.day_batch, _ = self.sim.day(day)
            self.day_index = day
        seq = self.day_batch.seq
        part = self.day_batch[(seq >= self.position_s) & (seq < target)]
        self.position_s = target
        src.position_s = target
        return [(src.config.home_id, ReadingChunk("simulator", part))] if len(part) else []

    def next_awake(self) -> datetime | None:
        if self.position_s < int(self.source.backfill_days * DAY_S):
            return None
        # Each wake-up ends in a DuckDB transaction downstream: at 60x, one every 50 ms kept a
        # core busy writing three rows at a time. A reading each `live_interval_s` at most.
        interval = max(1.0 / self.source.speed, self.source.live_interval_s)
        return datetime.now(UTC) + timedelta(seconds=interval)

    def snapshot(self) -> int:
        return self.position_s


class SimulatorSource(FixedPartitionedSource[SourceItem, int]):
    """The household simulator as a live source.

    The first `backfill_days` stream as fast as the flow takes them (the house has already
    run); after that readings arrive at `speed` simulated seconds per real second, handed on
    at most every `live_interval_s` of wall time (all the seconds simulated since the last
    hand-off at once; at 1x, one reading a second). `days=None` runs for ever.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        days: float | None = None,
        backfill_days: float = 0.0,
        speed: float = 1.0,
        batch_s: int = 3600,
        live_interval_s: float = 0.5,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed {speed!r} must be positive")
        if live_interval_s <= 0:
            raise ValueError(f"live_interval_s {live_interval_s!r} must be positive")
        self.config = config
        self.days = days
        self.backfill_days = backfill_days
        self.speed = speed
        self.batch_s = batch_s
        self.live_interval_s = live_interval_s
        # Simulated seconds handed to the flow so far, and whether the last has been: for
        # whoever runs beside the flow (the demo's simulated user).
        self.position_s = 0
        self.done = False

    def list_parts(self) -> list[str]:
        return [f"simulator-{self.config.home_id}"]

    def build_part(
        self, step_id: str, for_part: str, resume_state: int | None
    ) -> _SimulatorPartition:
        return _SimulatorPartition(self, resume_state)


def _label(label_id: int, home_id: str, event_id: str, device: str, created: datetime) -> Label:
    created = created if created.tzinfo else created.replace(tzinfo=UTC)
    return Label(int(label_id), home_id, event_id, device, created)


def stored_labels(connection: duckdb.DuckDBPyConnection) -> tuple[dict[str, list[Label]], int]:
    """The labels already in the database, by the event they are to follow, and the last id.

    A flow that regenerates its events (a replay, the demo's simulated history) applies them when
    their event passes, in stream order, so a replay after labelling gives a recognised history
    and gives it the same way every time. A label of an event (`event_id`) follows that event; a
    cluster's name (`cluster:<id>`) follows the event of the label stored just before it, since
    naming a cluster labels its events first and then the cluster. Labels of events no longer
    stored are left out: nothing will pass for them.

    Parameters
    ----------
    connection
        The open database.

    Examples
    --------
    >>> import duckdb
    >>> from nilm.schema import SCHEMA_SQL
    >>> con = duckdb.connect()
    >>> _ = con.execute(SCHEMA_SQL)
    >>> _ = con.execute("INSERT INTO events (event_id, home_id, ts, legs, delta_p_w) VALUES "
    ...                 "('e1', 'h', '2026-01-05 08:00:00+00', 'a', 500)")
    >>> _ = con.execute("INSERT INTO labels (event_id, device, created_at) VALUES "
    ...                 "('e1', 'kettle', '2026-01-06 08:00:00+00'), "
    ...                 "('e1', 'heater', '2026-01-06 09:00:00+00'), "
    ...                 "('gone', 'oven', '2026-01-06 09:00:00+00')")
    >>> by_event, last = stored_labels(con)
    >>> [(x.label_id, x.device) for x in by_event["e1"]], sorted(by_event), last
    ([(1, 'kettle'), (2, 'heater')], ['e1'], 3)
    """
    rows = connection.execute(
        "SELECT l.label_id, coalesce(l.home_id, e.home_id), l.event_id, l.device, l.created_at "
        "FROM labels l LEFT JOIN events e USING (event_id) ORDER BY l.label_id"
    ).fetchall()
    by_event: dict[str, list[Label]] = {}
    last_id = 0
    follows: tuple[str, str] | None = None  # (event_id, home_id) of the last event label
    for label_id, home_id, event_id, device, created_at in rows:
        last_id = max(last_id, int(label_id))
        if event_id.startswith("cluster:"):
            if follows is not None:
                by_event[follows[0]].append(_label(label_id, follows[1], event_id, device,
                                                   created_at))  # fmt: skip
            continue
        if home_id is None:
            follows = None
            continue
        by_event.setdefault(event_id, []).append(
            _label(label_id, home_id, event_id, device, created_at)
        )
        follows = (event_id, home_id)
    return by_event, last_id


class _LabelPartition(StatefulSourcePartition[tuple[str, Label], int]):
    def __init__(self, source: LabelSource, resume: int | None) -> None:
        self.source = source
        self.cursor = source.connection.cursor()
        self.last_label_id = resume if resume is not None else source.after_label_id

    def next_batch(self) -> list[tuple[str, Label]]:
        if self.source.finished is not None and self.source.finished():
            raise StopIteration
        rows = self.cursor.execute(
            "SELECT l.label_id, coalesce(l.home_id, e.home_id), l.event_id, l.device, "
            "l.created_at FROM labels l LEFT JOIN events e USING (event_id) "
            "WHERE l.label_id > ? ORDER BY l.label_id LIMIT 1000",
            [self.last_label_id],
        ).fetchall()
        labels = []
        for label_id, home_id, event_id, device, created_at in rows:
            self.last_label_id = int(label_id)
            if home_id is None:
                log.warning(
                    "label %s names event %s, which is not stored: skipped", label_id, event_id
                )
                continue
            labels.append((home_id, _label(label_id, home_id, event_id, device, created_at)))
        return labels

    def next_awake(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.source.poll_s)

    def snapshot(self) -> int:
        return self.last_label_id

    def close(self) -> None:
        self.cursor.close()


class LabelSource(FixedPartitionedSource[tuple[str, Label], int]):
    """Labels confirmed in the dashboard or by `nilm label`, polled from the `labels` table.

    The snapshot is the last `label_id` passed on, so each label reaches the models once.
    `finished`, when given, ends the input once it returns True (a demo of a set length).
    Without a snapshot it starts after `after_label_id`: the labels up to it are applied as their
    events pass (`stored_labels`).
    """

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        poll_s: float = 1.0,
        finished: Callable[[], bool] | None = None,
        after_label_id: int = 0,
    ) -> None:
        self.connection = connection
        self.poll_s = poll_s
        self.finished = finished
        self.after_label_id = after_label_id

    def list_parts(self) -> list[str]:
        return ["labels"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _LabelPartition:
        return _LabelPartition(self, resume_state)


class _StoppablePartition(StatefulSourcePartition[Any, Any]):
    def __init__(self, inner: StatefulSourcePartition[Any, Any], stop: Callable[[], bool]) -> None:
        self.inner = inner
        self.stop = stop

    def next_batch(self) -> Any:
        if self.stop():
            raise StopIteration
        return self.inner.next_batch()

    def next_awake(self) -> datetime | None:
        return self.inner.next_awake()

    def snapshot(self) -> Any:
        return self.inner.snapshot()

    def close(self) -> None:
        self.inner.close()


class StoppableSource(FixedPartitionedSource[Any, Any]):
    """Any partitioned source that ends, as if its input were finished, once `stop()` is True.

    Ctrl-C sets the flag: the flow then drains and completes, so every item already read is
    written and the database is closed cleanly, instead of a write cut off mid-transaction.
    """

    def __init__(self, inner: FixedPartitionedSource[Any, Any], stop: Callable[[], bool]) -> None:
        self.inner = inner
        self.stop = stop

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _StoppablePartition:
        inner = self.inner.build_part(step_id, for_part, resume_state)
        return _StoppablePartition(inner, self.stop)
