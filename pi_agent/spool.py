"""The durable spool: every reading the Pi took, kept in SQLite until the PC has fetched it.

SQLite in WAL mode with `synchronous=FULL`: a commit is on the SD card when it returns, and a
crash (power cut, SIGKILL) at any moment leaves the last committed state, never a corrupt file.
Readings are buffered in memory and committed together every `commit_interval_s` (a few
seconds by default), so the card sees one small write burst per interval instead of one per
second; a crash loses at most that interval.

Only committed readings are served. Sequence numbers continue across restarts from the last
committed one, so a number handed to the PC always names the same reading, even when the
agent dies with uncommitted readings that it then numbers again.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nilm.records import READING_COLUMNS, from_epoch_us

__all__ = ["Spool", "SpoolStats", "row_to_json"]

logger = logging.getLogger(__name__)

_COLUMNS = ", ".join(READING_COLUMNS)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY,
    ts_us INTEGER NOT NULL,
    {", ".join(f"{c} REAL" for c in READING_COLUMNS)}
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_INSERT = (
    f"INSERT INTO readings (seq, ts_us, {_COLUMNS}) "
    f"VALUES ({', '.join('?' * (len(READING_COLUMNS) + 2))})"
)


def row_to_json(row: Sequence[float | int]) -> dict[str, object]:
    """A spool row as the JSON object the HTTP API serves (what `parse_logger_rows` reads)."""
    ts = from_epoch_us(int(row[1])).isoformat(timespec="microseconds").replace("+00:00", "Z")
    out: dict[str, object] = {"seq": int(row[0]), "timestamp_utc": ts}
    out.update(zip(READING_COLUMNS, row[2:], strict=True))
    return out


@dataclass(slots=True)
class SpoolStats:
    commits: int = 0
    committed_rows: int = 0
    deleted_by_age: int = 0
    deleted_by_size: int = 0
    # Rows deleted before anyone asked for anything after them: readings the PC never got.
    deleted_unfetched: int = 0
    last_commit_ms: float = 0.0


class Spool:
    """Seq-numbered readings in SQLite; `append` buffers, `flush` commits, `after` reads.

    Parameters
    ----------
    path
        The SQLite file (created with its directory).
    commit_interval_s
        How long readings may wait in memory before `flush_due()` says to commit.
    retention_days, max_bytes
        Readings older than this, or beyond this file size, are deleted, oldest first.
    clock
        Monotonic seconds, for the commit interval.
    """

    def __init__(
        self,
        path: str | Path,
        commit_interval_s: float = 2.0,
        retention_days: float = 30.0,
        max_bytes: int = 512 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.commit_interval_s = commit_interval_s
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self.clock = clock
        self.stats = SpoolStats()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect on a new file
        self._db.executescript(_SCHEMA)
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        max_seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM readings").fetchone()[0]
        self.last_seq: int = max(int(meta.get("last_seq", 0)), int(max_seq))
        last = self._db.execute(
            "SELECT ts_us FROM readings WHERE seq = ?", (self.last_seq,)
        ).fetchone()
        self.last_ts_us: int | None = int(last[0]) if last else meta.get("last_ts_us")
        self._next_seq = self.last_seq + 1
        self._pending: list[tuple[float | int, ...]] = []
        self._last_commit = clock()
        self.fetched_after = 0  # the largest `after` any reader asked for
        logger.info("spool %s opened at seq %d", self.path, self.last_seq)

    # -- writing -----------------------------------------------------------------------------

    def append(self, ts_us: int, values: Sequence[float]) -> int:
        """Buffer one reading; returns its sequence number."""
        if len(values) != len(READING_COLUMNS):
            raise ValueError(f"a reading has {len(READING_COLUMNS)} values, got {len(values)}")
        seq = self._next_seq
        self._next_seq += 1
        self._pending.append((seq, int(ts_us), *map(float, values)))
        return seq

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush_due(self) -> bool:
        return bool(self._pending) and (self.clock() - self._last_commit >= self.commit_interval_s)

    def flush(self) -> int:
        """Commit the buffered readings in one transaction; returns how many."""
        self._last_commit = self.clock()
        if not self._pending:
            return 0
        rows, self._pending = self._pending, []
        started = time.perf_counter()
        last_seq, last_ts = int(rows[-1][0]), int(rows[-1][1])
        with self._transaction():
            self._db.executemany(_INSERT, rows)
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("last_seq", last_seq), ("last_ts_us", last_ts)],
            )
        self.last_seq, self.last_ts_us = last_seq, last_ts
        self.stats.commits += 1
        self.stats.committed_rows += len(rows)
        self.stats.last_commit_ms = (time.perf_counter() - started) * 1e3
        return len(rows)

    def _transaction(self) -> _Tx:
        return _Tx(self._db)

    # -- reading -----------------------------------------------------------------------------

    def after(self, seq: int, limit: int) -> list[tuple[float | int, ...]]:
        """Committed readings with sequence number above `seq`, oldest first, at most `limit`."""
        self.fetched_after = max(self.fetched_after, seq)
        cur = self._db.execute(
            f"SELECT seq, ts_us, {_COLUMNS} FROM readings WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [tuple(r) for r in cur.fetchall()]

    def first_seq(self) -> int | None:
        row = self._db.execute("SELECT MIN(seq) FROM readings").fetchone()
        return None if row[0] is None else int(row[0])

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])

    def size_bytes(self) -> int:
        page = self._db.execute("PRAGMA page_size").fetchone()[0]
        used = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(page * (used - free))

    # -- retention ---------------------------------------------------------------------------

    def enforce_retention(self, now_us: int) -> int:
        """Delete readings older than `retention_days`, then the oldest beyond `max_bytes`."""
        deleted = 0
        cutoff = now_us - int(self.retention_days * 86_400e6)
        with self._transaction():
            self.stats.deleted_unfetched += self._count_unfetched("ts_us < ?", cutoff)
            n = self._db.execute("DELETE FROM readings WHERE ts_us < ?", (cutoff,)).rowcount
        self.stats.deleted_by_age += n
        deleted += n
        size = self.size_bytes()
        if size > self.max_bytes:
            rows = self.count()
            # Aim 10 % under the cap so that this runs seldom, not at every commit.
            keep = int(rows * 0.9 * self.max_bytes / size)
            if rows > keep:
                first = self.first_seq() or 0
                below = first + (rows - keep)
                with self._transaction():
                    self.stats.deleted_unfetched += self._count_unfetched("seq < ?", below)
                    n = self._db.execute("DELETE FROM readings WHERE seq < ?", (below,)).rowcount
                self.stats.deleted_by_size += n
                deleted += n
        if deleted:
            self._db.execute("PRAGMA incremental_vacuum")
            logger.info("retention deleted %d readings from %s", deleted, self.path)
        return deleted

    def _count_unfetched(self, where: str, value: int) -> int:
        q = f"SELECT COUNT(*) FROM readings WHERE {where} AND seq > ?"
        return int(self._db.execute(q, (value, self.fetched_after)).fetchone()[0])

    def integrity_ok(self) -> bool:
        return bool(self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")

    def close(self, flush: bool = True) -> None:
        if flush:
            self.flush()
        self._db.close()


class _Tx:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
