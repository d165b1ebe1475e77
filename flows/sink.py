"""The DuckDB sink: every write is idempotent, so at-least-once delivery stores each row once.

Readings and rejections are inserted or ignored by their keys; events, activations, alerts and
clusters are upserted, except that a device a user confirmed is never overwritten by a prediction.
A confirmation replaces an earlier one (a correction): the learner emits labels in label order.

Events are revisable (`nilm.provisional`): a provisional row is refined by later upserts of the
same id, never overwrites a final row, and goes when a `Settlement` says it no longer stands.
`events.detected_at` is the wall-clock time a row was first written; updates keep it.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from nilm.provisional import SETTLE_TABLE
from nilm.records import READING_COLUMNS, ReadingBatch, Rejection

__all__ = ["DuckDBSink", "SinkItem", "home_of", "write_items"]

log = logging.getLogger(__name__)

# ("readings", ReadingBatch) | ("rejected", Rejection) | (table, row dict) for the other tables.
SinkItem = tuple[str, Any]

_KEYS = {
    "events": "event_id",
    "activations": "activation_id",
    "alerts": "alert_id",
    "clusters": "cluster_id",
    "event_windows": "event_id",
}
# A confirmed label is the truth: a later prediction for the same event must not replace it,
# while a later confirmation (a correction) must.
_KEEP_WHEN_LABELLED = {"device", "confidence", "labelled"}
# A label on a provisional event that is replaced goes to the final event within this many
# seconds, on a common leg, in the same direction (`nilm.provisional.ProvisionalTracker.carry_s`).
CARRY_S = 2.0


def _readings_table(batches: Sequence[ReadingBatch]) -> pa.Table:
    batch = ReadingBatch.concat(batches)
    arrays = {
        "home_id": pa.array([batch.home_id] * len(batch), pa.string()),
        "ts": pa.array(batch.ts_us, pa.timestamp("us", tz="UTC")),
        "seq": pa.array(batch.seq, pa.int64()),
    }
    for name in READING_COLUMNS:
        arrays[name] = pa.array(batch.columns[name], pa.float64(), from_pandas=True)
    return pa.table(arrays)


def _any_stored_since(cur: duckdb.DuckDBPyConnection, incoming: pa.Table) -> bool:
    """Whether a home of `incoming` has a reading stored at or after its first incoming one."""
    first = pc.min(incoming.column("ts")).as_py()
    homes = pc.unique(incoming.column("home_id")).to_pylist()
    found = cur.execute(
        "SELECT EXISTS (SELECT 1 FROM readings WHERE ts >= ? AND home_id IN (SELECT unnest(?)))",
        [first, homes],
    ).fetchall()
    return bool(found[0][0])


def _write_readings(cur: duckdb.DuckDBPyConnection, batches: list[ReadingBatch]) -> None:
    by_home: dict[str, list[ReadingBatch]] = defaultdict(list)
    for b in batches:
        if len(b):
            by_home[b.home_id].append(b)
    if not by_home:
        return
    # One INSERT for every home of the batch: a fleet's sink batch holds a reading or two of
    # each of hundreds of homes, and a statement per home cost ~1 ms each.
    table = pa.concat_tables([_readings_table(group) for group in by_home.values()])
    # A plain INSERT checks the key for a clash; OR IGNORE also looks up every row it keeps,
    # which took a simulated week's replay 0.5-1 CPU s more. It is needed only for readings a
    # restart resends, which are no later than the newest one stored.
    insert = "INSERT OR IGNORE" if _any_stored_since(cur, table) else "INSERT"
    cur.register("incoming_readings", table)
    try:
        cur.execute(
            f"{insert} INTO readings SELECT home_id, ts, seq, "
            + ", ".join(READING_COLUMNS)
            + " FROM incoming_readings"
        )
    finally:
        cur.unregister("incoming_readings")


def _write_rejections(cur: duckdb.DuckDBPyConnection, rejections: list[Rejection]) -> None:
    now = datetime.now(UTC)
    rows = {r.rejection_id: r for r in rejections}
    cur.executemany(
        "INSERT OR IGNORE INTO rejected (rejection_id, home_id, received_at, source_key, raw, "
        "reason) VALUES (?, ?, ?, ?, ?, ?)",
        [(k, r.home_id, now, r.source_key, r.raw, r.reason) for k, r in rows.items()],
    )


def _upsert(cur: duckdb.DuckDBPyConnection, table: str, rows: list[dict[str, Any]]) -> None:
    key = _KEYS[table]
    latest = {row[key]: row for row in rows}  # one command may not update a row twice
    where = ""
    if table == "events":
        now = datetime.now(UTC)
        latest = {k: {**row, "detected_at": now} for k, row in latest.items()}
        # a provisional answer never overwrites the final one (a replay after a crash)
        where = " WHERE NOT (coalesce(events.provisional, FALSE) = FALSE AND excluded.provisional)"
    columns = list(next(iter(latest.values())).keys())
    updates = []
    for c in columns:
        if c == key or (table == "events" and c == "detected_at"):
            continue
        if table == "events" and c in _KEEP_WHEN_LABELLED:
            updates.append(
                f"{c} = CASE WHEN excluded.labelled THEN excluded.{c} "
                f"WHEN events.labelled THEN events.{c} ELSE excluded.{c} END"
            )
        else:
            updates.append(f'"{c}" = excluded."{c}"')
    # One INSERT … SELECT over an Arrow table: executemany ran row by row, 20 ms a row.
    # A list of floats (event_windows.window) arrives as an Arrow list<double> and is cast to
    # the column's FLOAT[]; names are quoted because `window` is an SQL keyword.
    incoming = pa.Table.from_pylist(list(latest.values()))
    names = ", ".join(f'"{c}"' for c in columns)
    sql = (
        f"INSERT INTO {table} ({names}) SELECT {names} "
        f"FROM incoming_rows ON CONFLICT ({key}) DO UPDATE SET {', '.join(updates)}{where}"
    )
    cur.register("incoming_rows", incoming)
    try:
        cur.execute(sql)
    finally:
        cur.unregister("incoming_rows")


def _settle(cur: duckdb.DuckDBPyConnection, settlement: dict[str, Any]) -> None:
    """Deletes the provisional rows a `nilm.provisional.Settlement` voids; final rows stay.

    A retracted row that carries a label stays until its span is settled, when the label is
    carried to the final event that replaced it (a new `labels` row, so the learner learns it
    through the label input, once); the original label row is kept either way.
    """
    home = settlement["home_id"]
    retracted = list(settlement["retracted"])
    if retracted:
        cur.execute(
            "DELETE FROM events WHERE event_id IN (SELECT unnest(?)) AND provisional "
            "AND event_id NOT IN (SELECT event_id FROM labels)",
            [retracted],
        )
    if settlement["everything"]:
        span, params = "", [home]
    elif settlement["settled_before"] is not None:
        span, params = " AND ts < ?", [home, settlement["settled_before"]]
    else:
        return
    labelled = cur.execute(
        "SELECT e.event_id, e.ts, e.legs, e.delta_p_w, l.device, l.created_at FROM events e "
        "JOIN labels l USING (event_id) WHERE e.home_id = ? AND e.provisional"
        + span.replace("ts", "e.ts")
        + " ORDER BY l.label_id",
        params,
    ).fetchall()
    latest = {row[0]: row for row in labelled}  # the newest label of each event
    for event_id, ts, legs, delta_p_w, device, created_at in latest.values():
        _carry_label(cur, home, event_id, ts, legs, delta_p_w, device, created_at)
    cur.execute("DELETE FROM events WHERE home_id = ? AND provisional" + span, params)


def _carry_label(
    cur: duckdb.DuckDBPyConnection,
    home: str,
    event_id: str,
    ts: datetime,
    legs: str,
    delta_p_w: float,
    device: str,
    created_at: datetime,
) -> None:
    candidates = cur.execute(
        "SELECT event_id, ts, legs FROM events WHERE home_id = ? AND NOT provisional "
        "AND ts BETWEEN ? AND ? AND sign(delta_p_w) = sign(?) "
        "AND event_id NOT IN (SELECT event_id FROM labels) ORDER BY ts, event_id",
        [home, ts - timedelta(seconds=CARRY_S), ts + timedelta(seconds=CARRY_S), delta_p_w],
    ).fetchall()
    near = [c for c in candidates if set(c[2]) & set(legs)]
    if not near:
        log.info(
            "provisional event %s, labelled %r, turned out to be no event: its label is kept "
            "and names no stored event", event_id, device,
        )  # fmt: skip
        return
    final_id = min(near, key=lambda c: abs((c[1] - ts).total_seconds()))[0]
    cur.execute(
        "INSERT INTO labels (event_id, device, created_at, home_id, source) "
        "VALUES (?, ?, ?, ?, ?)",
        [final_id, device, created_at, home, f"carried from {event_id}"],
    )
    log.info("label %r of provisional event %s carried to event %s", device, event_id, final_id)


def _homes_with_provisional_rows(
    cur: duckdb.DuckDBPyConnection, items: Sequence[SinkItem]
) -> set[str]:
    """The homes settled in `items` that have provisional rows, stored or among `items`.

    A settlement of any other home has nothing to delete or carry: one query for the batch
    instead of two per settlement (a fleet's batch settles dozens of homes, most with none).
    """
    settled = {v["home_id"] for t, v in items if t == SETTLE_TABLE}
    if not settled:
        return set()
    coming = {v["home_id"] for t, v in items if t == "events" and v.get("provisional")}
    stored = cur.execute(
        "SELECT DISTINCT home_id FROM events WHERE provisional "
        "AND home_id IN (SELECT unnest(?))",
        [sorted(settled - coming)],
    ).fetchall()
    return (settled & coming) | {str(r[0]) for r in stored}


def write_items(cur: duckdb.DuckDBPyConnection, items: Iterable[SinkItem]) -> None:
    """Writes a batch of sink items, grouped by table, in one transaction.

    Settlements apply in order: rows that came before one are written before it.
    """
    readings: list[ReadingBatch] = []
    rejections: list[Rejection] = []
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def write_pending() -> None:
        if readings:
            _write_readings(cur, readings)
        if rejections:
            _write_rejections(cur, rejections)
        for table, table_rows in rows.items():
            _upsert(cur, table, table_rows)
        readings.clear()
        rejections.clear()
        rows.clear()

    items = list(items)
    cur.execute("BEGIN TRANSACTION")
    try:
        unsettled = _homes_with_provisional_rows(cur, items)
        for table, value in items:
            if table == "readings":
                readings.append(value)
            elif table == "rejected":
                rejections.append(value)
            elif table in _KEYS:
                rows[table].append(value)
            elif table == SETTLE_TABLE:
                if value["home_id"] in unsettled:  # else it has nothing to settle
                    write_pending()
                    _settle(cur, value)
            else:
                raise ValueError(f"sink item for unknown table {table!r}")
        write_pending()
        cur.execute("COMMIT")
    except Exception:
        cur.execute("ROLLBACK")
        raise


class _Partition(StatelessSinkPartition[SinkItem]):
    def __init__(self, cur: duckdb.DuckDBPyConnection, counts: Counter[str] | None) -> None:
        self.cur = cur
        self.counts = counts

    def write_batch(self, items: list[SinkItem]) -> None:
        write_items(self.cur, items)
        if self.counts is not None:
            for table, value in items:
                if table == "events" and value.get("provisional"):
                    self.counts["provisional"] += 1
                elif table != SETTLE_TABLE:
                    self.counts[table] += len(value) if table == "readings" else 1

    def close(self) -> None:
        self.cur.close()


class DuckDBSink(DynamicSink[SinkItem]):
    """Writes to the process's DuckDB connection, a cursor per worker (DuckDB's thread rule).

    `counts`, when given, counts what is written per table (readings in rows).
    """

    def __init__(
        self, connection: duckdb.DuckDBPyConnection, counts: Counter[str] | None = None
    ) -> None:
        self.connection = connection
        self.counts = counts

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self.connection.cursor(), self.counts)


def home_of(item: SinkItem) -> str:
    """The home a sink item belongs to: the key that routes it to its home's database file."""
    table, value = item
    if table in ("readings", "rejected"):
        return str(value.home_id)
    return str(value["home_id"])
