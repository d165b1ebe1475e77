"""The dashboard's data store: every DuckDB query the views make, cached, and the label writes.

One `DataStore` serves every browser session of a process. DuckDB allows one connection per
process and a cursor per thread (see FACTS.md), so the store keeps a cursor for each thread
that asks. Power is downsampled in SQL (mean, min and max per time bucket) so a month of 1 Hz
readings reaches the browser as a few thousand points. The only table the store writes is
`labels`; the flow polls it and learns from each new row.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import duckdb
import numpy as np
import pandas as pd

from nilm.labelling import clean_device_name
from nilm.now import MINUTE_POWER_SQL, OPEN_ACTIVATIONS_SQL, NowSnapshot, what_is_on
from nilm.pairing import always_on_base_w

# A label whose event_id is "cluster:<cluster_id>" names a whole unknown-device cluster; the
# learner (nilm.learning.CLUSTER_LABEL_PREFIX) reads it so. Kept here as a string so the
# dashboard does not import the models.
CLUSTER_LABEL_PREFIX = "cluster:"

__all__ = [
    "CLUSTER_LABEL_PREFIX",
    "LEG_CHOICES",
    "RESOLUTIONS",
    "DataStore",
    "FleetStore",
    "LabelRejected",
    "PowerView",
    "RangeProblem",
    "ReadOnlyDatabase",
    "UnknownCluster",
    "UnknownEvent",
    "choose_bucket_s",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# What the resolution menu offers, in seconds per point; None picks one for the range.
RESOLUTIONS: dict[str, int | None] = {"auto": None, "1 s": 1, "1 min": 60, "1 h": 3600}
LEG_CHOICES = ("total", "both", "a", "b")
# Bucket widths that read well on an axis.
_NICE_BUCKETS_S = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
)  # fmt: skip
AUTO_POINTS = 2000
# A chosen resolution never sends more than this many points to a browser.
MAX_POINTS = 20_000
US = 1_000_000

_EVENT_COLUMNS = (
    "event_id, home_id, epoch_us(ts) AS ts_us, legs, delta_p_w, device, confidence, novelty, "
    "uncertainty, cluster_id, delta_q_var, delta_s_va, delta_current_a, delta_pf, p_before_w, "
    "p_after_w, delta_p_a_w, delta_p_b_w, voltage_v, inrush_peak_w, ramp_s, "
    "settle_slope_w_per_s, detector, labelled"
)
# The latest confirmation of each event, so a label shows at once, before the flow answers it.
_LATEST_LABEL = (
    "(SELECT event_id, arg_max(device, label_id) AS confirmed_device FROM labels GROUP BY event_id)"
)


class LabelRejected(ValueError):
    """A label that was not stored; the message says why and what to do instead."""


class UnknownEvent(LabelRejected):
    """The event to label is not in the database."""


class UnknownCluster(LabelRejected):
    """The cluster to name is not in the database or has no events."""


class ReadOnlyDatabase(LabelRejected):
    """The dashboard opened the database read-only, so it cannot store labels."""


class RangeProblem(ValueError):
    """A date range that cannot be shown; the message says why."""


@dataclass(frozen=True, slots=True)
class PowerView:
    """Downsampled power for one range: what the live chart draws.

    `frame` has `ts` (datetime64, UTC, naive) and, for each series in (`total`, `a`, `b`),
    `{series}_mean`, `{series}_min`, `{series}_max` in W, `{series}_va` (mean apparent power)
    and `{series}_pf` (Σ P / Σ S over the bucket); `n` is how many readings each bucket holds.
    `note` explains a resolution other than the one asked for.
    """

    frame: pd.DataFrame
    start: datetime
    end: datetime
    bucket_s: int
    note: str = ""


def choose_bucket_s(span_s: float, resolution: str = "auto") -> tuple[int, str]:
    """Seconds per point for a range and a menu choice, and a note when it differs.

    Examples
    --------
    >>> choose_bucket_s(30 * 86400)
    (1800, '')
    >>> choose_bucket_s(3600, "1 s")
    (1, '')
    >>> choose_bucket_s(30 * 86400, "1 s")[0]
    300
    """
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution {resolution!r} is not one of {sorted(RESOLUTIONS)}")
    asked = RESOLUTIONS[resolution]
    limit = AUTO_POINTS if asked is None else MAX_POINTS
    wanted = max(span_s / limit, float(asked or 1))
    bucket = next((b for b in _NICE_BUCKETS_S if b >= wanted), None)
    if bucket is None:
        bucket = math.ceil(wanted / 86400.0) * 86400
    note = ""
    if asked is not None and bucket != asked:
        note = (
            f"{resolution} over {_span_text(span_s)} would be {span_s / asked:,.0f} points; "
            f"showing {_bucket_text(bucket)} buckets (min, mean and max of each)."
        )
    return bucket, note


def _span_text(span_s: float) -> str:
    if span_s >= 2 * 86400:
        return f"{span_s / 86400:.0f} days"
    if span_s >= 2 * 3600:
        return f"{span_s / 3600:.0f} hours"
    return f"{span_s / 60:.0f} minutes"


def _bucket_text(bucket_s: int) -> str:
    if bucket_s % 3600 == 0:
        return f"{bucket_s // 3600} h"
    if bucket_s % 60 == 0:
        return f"{bucket_s // 60} min"
    return f"{bucket_s} s"


def _utc(ts: datetime | pd.Timestamp | np.datetime64 | str) -> datetime:
    """A timezone-aware UTC datetime; naive input is taken as UTC."""
    stamp = pd.Timestamp(ts)
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
    return stamp.to_pydatetime()


def _to_naive_utc(us: pd.Series) -> pd.Series:
    """Microseconds since the epoch as naive UTC datetimes (what Bokeh draws); null is NaT."""
    if us.isna().any():
        return pd.to_datetime(us.astype("float64"), unit="us")
    return pd.to_datetime(us.astype("int64"), unit="us")


def _is_read_only(connection: duckdb.DuckDBPyConnection) -> bool:
    cur = connection.cursor()
    try:
        row = cur.execute(
            "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
        ).fetchone()
    finally:
        cur.close()
    return bool(row and row[0])


def _fmt(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class DataStore:
    """Cached queries over one DuckDB connection, and label writes.

    Parameters
    ----------
    connection
        The process's DuckDB connection; the store takes a cursor of it per thread.
    home_id
        The home to show; None shows the first home that has readings or events.
    clock
        Returns the current UTC time (for `labels.created_at`); tests pass their own.
    live_ttl_s, history_ttl_s
        How long a query result is reused when its range reaches the latest reading, and when
        it lies wholly in the past.
    """

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        home_id: str | None = None,
        clock: Callable[[], datetime] | None = None,
        live_ttl_s: float = 1.0,
        history_ttl_s: float = 300.0,
    ) -> None:
        self.connection = connection
        self._home_id = home_id
        self.clock = clock or (lambda: datetime.now(UTC))
        self.live_ttl_s = live_ttl_s
        self.history_ttl_s = history_ttl_s
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self._cache: dict[Hashable, tuple[float, Any]] = {}
        self._generation = 0
        self._abandoned_filter: str | None = None
        self._provisional_sql: str | None = None
        self.read_only = bool(
            self._cursor()
            .execute(
                "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()"
            )
            .fetchone()[0]  # type: ignore[index]
        )

    # -- plumbing -------------------------------------------------------------------------
    def _has_column(self, table: str, column: str) -> bool:
        """Whether the database has `table.column` (files written before a schema change may
        lack newer columns; the views then do without them)."""
        row = (
            self._cursor()
            .execute(
                "SELECT count(*) FROM information_schema.columns "
                "WHERE table_name = ? AND column_name = ? AND table_schema = current_schema()",
                [table, column],
            )
            .fetchone()
        )
        return bool(row and row[0])

    @property
    def _not_abandoned(self) -> str:
        if self._abandoned_filter is None:
            self._abandoned_filter = (
                "NOT coalesce(abandoned, FALSE)"
                if self._has_column("activations", "abandoned")
                else "TRUE"
            )
        return self._abandoned_filter

    def _provisional(self, alias: str = "") -> str:
        """`provisional` as a select item (a row the flow may still refine or remove); FALSE for
        files written before provisional events."""
        if self._provisional_sql is None:
            self._provisional_sql = (
                "coalesce({a}provisional, FALSE)" if self._has_column("events", "provisional")
                else "FALSE"
            )  # fmt: skip
        return self._provisional_sql.format(a=alias) + " AS provisional"

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self.connection.cursor()
            self._local.cursor = cursor
            with self._lock:
                self._cursors.append(cursor)
        return cursor

    def _query(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        return self._cursor().execute(sql, params or []).df()

    def _cached(self, key: Hashable, ttl_s: float, compute: Callable[[], T]) -> T:
        now = time.monotonic()
        full_key = (key, self._generation)
        with self._lock:
            hit = self._cache.get(full_key)
        if hit is not None and hit[0] > now:
            return hit[1]  # type: ignore[no-any-return]
        value = compute()
        with self._lock:
            if len(self._cache) > 256:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[full_key] = (now + ttl_s, value)
        return value

    def invalidate(self) -> None:
        """Forget cached results (after a label, so every view shows it at once)."""
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def close(self) -> None:
        """Close the cursors the store opened (not the connection it was given)."""
        with self._lock:
            cursors, self._cursors = self._cursors, []
        for cursor in cursors:
            with contextlib.suppress(duckdb.Error):
                cursor.close()

    # -- what is there --------------------------------------------------------------------
    @property
    def home_id(self) -> str:
        """The home shown: the one given, else the first with readings or events."""
        if self._home_id is None:
            row = (
                self._cursor()
                .execute(
                    "SELECT min(home_id) FROM ((SELECT home_id FROM readings LIMIT 1) "
                    "UNION ALL (SELECT home_id FROM events LIMIT 1))"
                )
                .fetchone()
            )
            if row is None or row[0] is None:
                return "home"
            self._home_id = str(row[0])
        return self._home_id

    def data_bounds(self) -> tuple[datetime, datetime] | None:
        """First and last reading of the home (UTC), or None when there are none yet."""

        def compute() -> tuple[datetime, datetime] | None:
            row = (
                self._cursor()
                .execute(
                    "SELECT epoch_us(min(ts)), epoch_us(max(ts)) FROM readings WHERE home_id = ?",
                    [self.home_id],
                )
                .fetchone()
            )
            if row is None or row[0] is None:
                return None
            lo = datetime.fromtimestamp(row[0] / US, UTC)
            hi = datetime.fromtimestamp(row[1] / US, UTC)
            return lo, hi

        return self._cached(("bounds", self.home_id), self.live_ttl_s, compute)

    def check_range(self, start: Any, end: Any) -> tuple[datetime, datetime]:
        """The range to show, or `RangeProblem` with a message for the user.

        A range must start before it ends and before the latest reading; an end after the latest
        reading is fine (it is where live data arrives).
        """
        if start is None or end is None:
            raise RangeProblem("Pick both a start and an end for the date range.")
        lo, hi = _utc(start), _utc(end)
        if hi <= lo:
            raise RangeProblem(
                f"The range ends ({_fmt(hi)}) before it starts ({_fmt(lo)}): "
                "pick an end after the start."
            )
        bounds = self.data_bounds()
        if bounds is None:
            raise RangeProblem("There are no readings yet: start a flow (nilm run or nilm demo).")
        if lo > bounds[1]:
            raise RangeProblem(
                f"The range starts at {_fmt(lo)}, after the latest reading ({_fmt(bounds[1])}); "
                "there is nothing to show in the future. Pick a start before that."
            )
        if hi < bounds[0]:
            raise RangeProblem(
                f"The range ends at {_fmt(hi)}, before the first reading ({_fmt(bounds[0])}). "
                "Pick a later range."
            )
        return lo, hi

    def _ttl(self, end: datetime) -> float:
        bounds = self.data_bounds()
        live = bounds is None or end >= bounds[1] - timedelta(minutes=5)
        return self.live_ttl_s if live else self.history_ttl_s

    # -- power ----------------------------------------------------------------------------
    def power(self, start: Any, end: Any, resolution: str = "auto") -> PowerView:
        """Power between `start` and `end`, downsampled in DuckDB to the chosen resolution.

        Raises `RangeProblem` for a range that cannot be shown.
        """
        lo, hi = self.check_range(start, end)
        bucket_s, note = choose_bucket_s((hi - lo).total_seconds(), resolution)
        key = ("power", self.home_id, lo, hi, bucket_s)
        frame = self._cached(key, self._ttl(hi), lambda: self._power_frame(lo, hi, bucket_s))
        return PowerView(frame, lo, hi, bucket_s, note)

    def _power_frame(self, lo: datetime, hi: datetime, bucket_s: int) -> pd.DataFrame:
        p = {"a": "a_act_power", "b": "b_act_power", "total": "(a_act_power + b_act_power)"}
        s = {"a": "a_aprt_power", "b": "b_aprt_power", "total": "(a_aprt_power + b_aprt_power)"}
        if bucket_s == 1:
            cols = ", ".join(
                f"{p[k]} AS {k}_mean, {p[k]} AS {k}_min, {p[k]} AS {k}_max, {s[k]} AS {k}_va, "
                f"{p[k]} / nullif({s[k]}, 0) AS {k}_pf"
                for k in p
            )
            sql = (
                f"SELECT epoch_us(ts) AS ts_us, 1 AS n, {cols} FROM readings "
                "WHERE home_id = $home AND ts >= $lo AND ts < $hi ORDER BY ts"
            )
        else:
            cols = ", ".join(
                f"avg({p[k]}) AS {k}_mean, min({p[k]}) AS {k}_min, max({p[k]}) AS {k}_max, "
                f"avg({s[k]}) AS {k}_va, sum({p[k]}) / nullif(sum({s[k]}), 0) AS {k}_pf"
                for k in p
            )
            sql = (
                f"SELECT (epoch_us(ts) // $bucket) * $bucket AS ts_us, count(*) AS n, {cols} "
                "FROM readings WHERE home_id = $home AND ts >= $lo AND ts < $hi "
                "GROUP BY 1 ORDER BY 1"
            )
        params: dict[str, Any] = {"home": self.home_id, "lo": lo, "hi": hi}
        if bucket_s != 1:
            params["bucket"] = bucket_s * US
        frame = self._query(sql, params)
        frame.insert(0, "ts", _to_naive_utc(frame.pop("ts_us")))
        return frame

    def latest_power(self) -> dict[str, float] | None:
        """The latest reading's active power per leg and in total (W), with its time."""

        def compute() -> dict[str, float] | None:
            row = (
                self._cursor()
                .execute(
                    "SELECT epoch_us(ts), a_act_power, b_act_power FROM readings "
                    "WHERE home_id = ? ORDER BY ts DESC LIMIT 1",
                    [self.home_id],
                )
                .fetchone()
            )
            if row is None:
                return None
            return {"ts_us": row[0], "a": row[1], "b": row[2], "total": row[1] + row[2]}

        return self._cached(("latest", self.home_id), self.live_ttl_s, compute)

    def always_on_w(self) -> float:
        """The always-on base (W): the 2nd percentile of the last day's one-minute means."""

        def compute() -> float:
            bounds = self.data_bounds()
            if bounds is None:
                return 0.0
            rows = (
                self._cursor()
                .execute(MINUTE_POWER_SQL, {"home_id": self.home_id, "latest": bounds[1]})
                .fetchall()
            )
            base = always_on_base_w([r[0] for r in rows if r[0] is not None])
            return 0.0 if math.isnan(base) else base

        # The base moves over hours: a minute's reuse costs nothing a person would see.
        return self._cached(("always_on", self.home_id), 60.0, compute)

    def now(self) -> NowSnapshot:
        """What is on now: the open runs with their draw, the always-on base, the rest."""

        def compute() -> NowSnapshot:
            latest = self.latest_power()
            # A file written before runs could be abandoned has no such column.
            sql = OPEN_ACTIVATIONS_SQL.replace(
                "NOT coalesce(a.abandoned, FALSE)", self._not_abandoned
            )
            frame = self._query(sql, {"home_id": self.home_id})
            # NULL as None (pandas makes it NaN, which reads as a device name)
            runs = frame.astype(object).where(frame.notna(), None).to_dict("records")
            legs = {} if latest is None else {"a": latest["a"], "b": latest["b"]}
            at = None if latest is None else datetime.fromtimestamp(latest["ts_us"] / US, UTC)
            return what_is_on(runs, legs, self.always_on_w(), at)

        return self._cached(("now", self.home_id), self.live_ttl_s, compute)

    # -- events ---------------------------------------------------------------------------
    def events(
        self,
        start: Any = None,
        end: Any = None,
        device: str | None = None,
        legs: str | None = None,
        min_abs_delta_w: float = 0.0,
        limit: int = 5000,
        largest: bool = False,
    ) -> pd.DataFrame:
        """Events of the home, newest first, with the latest confirmation of each.

        `device` filters by predicted or confirmed device ('(unknown)' for none); `legs` by
        'a', 'b' or 'ab'. With `largest`, the `limit` events with the largest steps are kept
        (still newest first): what a chart of a long range can show.
        """
        where = ["e.home_id = $home"]
        params: dict[str, Any] = {"home": self.home_id, "limit": int(limit)}
        if start is not None:
            where.append("e.ts >= $lo")
            params["lo"] = _utc(start)
        if end is not None:
            where.append("e.ts < $hi")
            params["hi"] = _utc(end)
        if device == "(unknown)":
            where.append("coalesce(l.confirmed_device, e.device) IS NULL")
        elif device:
            where.append("coalesce(l.confirmed_device, e.device) = $device")
            params["device"] = device
        if legs:
            where.append("e.legs = $legs")
            params["legs"] = legs
        if min_abs_delta_w > 0:
            where.append("abs(e.delta_p_w) >= $min_dp")
            params["min_dp"] = float(min_abs_delta_w)
        cols = ", ".join(f"e.{c.strip()}" for c in _EVENT_COLUMNS.split(", "))
        cols = cols.replace("e.epoch_us(ts) AS ts_us", "epoch_us(e.ts) AS ts_us")
        sql = (
            f"SELECT {cols}, {self._provisional('e.')}, l.confirmed_device FROM events e "
            f"LEFT JOIN {_LATEST_LABEL} l USING (event_id) "
            f"WHERE {' AND '.join(where)} "
            f"ORDER BY {'abs(e.delta_p_w) DESC, ' if largest else ''}e.ts DESC LIMIT $limit"
        )
        if largest:
            sql = f"SELECT * FROM ({sql}) ORDER BY ts_us DESC"
        key = ("events", largest, tuple(sorted((k, str(v)) for k, v in params.items())))
        ttl = self.live_ttl_s if end is None else self._ttl(_utc(end))
        return self._cached(key, ttl, lambda: self._event_frame(sql, params))

    def _event_frame(self, sql: str, params: dict[str, Any]) -> pd.DataFrame:
        frame = self._query(sql, params)
        frame.insert(0, "ts", _to_naive_utc(frame.pop("ts_us")))
        frame["shown_device"] = frame["confirmed_device"].fillna(frame["device"])
        return frame

    def event(self, event_id: str) -> dict[str, Any] | None:
        """One event as a dict, or None when there is no such event."""
        frame = self._query(
            f"SELECT {_EVENT_COLUMNS}, {self._provisional()} FROM events WHERE event_id = ?",
            [str(event_id)],
        )
        if frame.empty:
            return None
        row: dict[str, Any] = frame.iloc[0].to_dict()
        row["ts"] = datetime.fromtimestamp(int(row.pop("ts_us")) / US, UTC)
        return row

    def labelling_queue(self, limit: int = 50) -> pd.DataFrame:
        """Unconfirmed events, the ones whose label would teach the models most first.

        A label teaches most where the models are unsure and where it speaks for many events:
        an event of a large unnamed cluster of unknowns comes before a lone one, and the
        second event of a cluster after the first of another (`teach`: uncertainty, or 1 when
        unknown, times ln(1 + the cluster's waiting events), divided by the event's rank in
        its cluster, newest first). Ties go to the more novel, then the larger step, then
        the newer event. `cluster_events` is how many events of its cluster wait.
        """
        sql = f"""
            WITH waiting AS (
                SELECT {_EVENT_COLUMNS}, {self._provisional()} FROM events e WHERE home_id = $home
                AND NOT coalesce(labelled, FALSE)
                AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.event_id = e.event_id)),
            named AS (
                SELECT cluster_id FROM clusters WHERE home_id = $home AND name IS NOT NULL
                UNION SELECT substr(event_id, {len(CLUSTER_LABEL_PREFIX) + 1}) FROM labels
                WHERE starts_with(event_id, '{CLUSTER_LABEL_PREFIX}')),
            ranked AS (
                SELECT w.*,
                    CASE WHEN w.cluster_id IS NULL OR w.cluster_id IN (SELECT * FROM named)
                        THEN 1 ELSE count(*) OVER (PARTITION BY w.cluster_id) END
                        AS cluster_events,
                    CASE WHEN w.cluster_id IS NULL THEN 1 ELSE row_number() OVER
                        (PARTITION BY w.cluster_id ORDER BY w.ts_us DESC) END AS cluster_rank
                FROM waiting w)
            SELECT *, coalesce(uncertainty, 1.0) * ln(1 + cluster_events) / cluster_rank
                AS teach
            FROM ranked
            ORDER BY teach DESC, novelty DESC NULLS LAST, abs(delta_p_w) DESC, ts_us DESC,
                event_id
            LIMIT $limit
        """
        params = {"home": self.home_id, "limit": int(limit)}

        def compute() -> pd.DataFrame:
            frame = self._query(sql, params)
            frame.insert(0, "ts", _to_naive_utc(frame.pop("ts_us")))
            return frame

        return self._cached(("queue", self.home_id, limit), self.live_ttl_s, compute)

    def queue_size(self) -> int:
        """How many events wait for a confirmation."""

        def compute() -> int:
            row = (
                self._cursor()
                .execute(
                    "SELECT count(*) FROM events e WHERE home_id = ? "
                    "AND NOT coalesce(labelled, FALSE) AND NOT EXISTS "
                    "(SELECT 1 FROM labels l WHERE l.event_id = e.event_id)",
                    [self.home_id],
                )
                .fetchone()
            )
            return int(row[0]) if row else 0

        return self._cached(("queue_size", self.home_id), self.live_ttl_s, compute)

    def device_names(self) -> list[str]:
        """Every device name the house knows: predicted, confirmed or given to a cluster."""

        def compute() -> list[str]:
            rows = (
                self._cursor()
                .execute(
                    "SELECT DISTINCT device FROM ("
                    "SELECT device FROM events WHERE home_id = $home AND device IS NOT NULL "
                    "UNION ALL SELECT device FROM labels WHERE coalesce(home_id, $home) = $home "
                    "UNION ALL SELECT name FROM clusters WHERE home_id = $home "
                    "AND name IS NOT NULL "
                    "UNION ALL SELECT device FROM activations WHERE home_id = $home "
                    "AND device IS NOT NULL) ORDER BY device",
                    {"home": self.home_id},
                )
                .fetchall()
            )
            return [str(r[0]) for r in rows]

        return self._cached(("devices", self.home_id), 5.0, compute)

    # -- labels ---------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyDatabase(
                "This dashboard opened the database read-only, so it cannot store labels. "
                "Stop it and run 'nilm label EVENT_ID DEVICE --db DB', or label in the dashboard "
                "of 'nilm run' / 'nilm demo', which owns the database."
            )

    def confirm_label(self, event_id: str, device: str, home_id: str | None = None) -> int:
        """Store that event `event_id` was device `device`; returns the new `label_id`.

        Raises `InvalidDeviceName` (a bad name), `UnknownEvent` (no such event) or
        `ReadOnlyDatabase`; all are `ValueError`s whose message is meant for the user.
        Nothing is written when it raises.
        """
        name = clean_device_name(device)
        self._check_writable()
        if not isinstance(event_id, str) or not event_id.strip():
            raise UnknownEvent("No event was chosen: pick an event in the list first.")
        event_id = event_id.strip()
        row = (
            self._cursor()
            .execute("SELECT home_id FROM events WHERE event_id = ?", [event_id])
            .fetchone()
        )
        if row is None:
            raise UnknownEvent(
                f"Event {event_id!r} does not exist in this database (a replay or clean-up may "
                "have removed it). Check the id, or refresh the list and pick another event."
            )
        if home_id is not None and home_id != row[0]:
            raise UnknownEvent(
                f"Event {event_id!r} belongs to home {row[0]!r}, not {home_id!r}; "
                "label it from that home's dashboard."
            )
        label_id = self._insert_labels(
            "SELECT $event_id AS event_id, $home AS home_id",
            {"event_id": event_id, "home": row[0], "device": name},
            source="dashboard",
        )
        log.info("label %s: event %s is %r", label_id[0], event_id, name)
        return label_id[0]

    def label_cluster(self, cluster_id: str, device: str) -> list[int]:
        """Name an unknown cluster: label every one of its events `device`, then the cluster.

        Returns the new label ids, in order (the last names the cluster; none when it was
        already named so). Raises like `confirm_label`, or `UnknownCluster`.
        """
        name = clean_device_name(device)
        self._check_writable()
        count = (
            self._cursor()
            .execute(
                "SELECT count(*) FROM events WHERE cluster_id = ? AND home_id = ?",
                [cluster_id, self.home_id],
            )
            .fetchone()
        )
        if not count or count[0] == 0:
            raise UnknownCluster(
                f"Cluster {cluster_id!r} has no events in this database; refresh the list."
            )
        # One label per event (each shows as confirmed at once), then one for the cluster
        # itself, "cluster:<id>", which the learner takes as naming it (nilm.learning).
        ids = self._insert_labels(
            "SELECT event_id, home_id, ts FROM events e WHERE cluster_id = $cluster "
            "AND home_id = $home AND NOT EXISTS "
            "(SELECT 1 FROM labels l WHERE l.event_id = e.event_id AND l.device = $device) "
            "UNION ALL SELECT $cluster_label, $home, NULL WHERE NOT EXISTS "
            "(SELECT 1 FROM labels l WHERE l.event_id = $cluster_label AND l.device = $device) "
            "ORDER BY ts NULLS LAST",
            {"cluster": cluster_id, "home": self.home_id, "device": name,
             "cluster_label": CLUSTER_LABEL_PREFIX + cluster_id},
            source="dashboard-cluster",
        )  # fmt: skip
        log.info("cluster %s named %r: %s labels", cluster_id, name, len(ids))
        return ids

    def _insert_labels(self, select_sql: str, params: dict[str, Any], source: str) -> list[int]:
        sql = (
            "INSERT INTO labels (event_id, device, created_at, home_id, source) "
            f"SELECT s.event_id, $device, $now, s.home_id, $source FROM ({select_sql}) s "
            "RETURNING label_id"
        )
        now = _utc(self.clock())
        try:
            rows = self._cursor().execute(sql, {**params, "now": now, "source": source}).fetchall()
        except duckdb.Error as err:
            if "read-only" in str(err).lower() or "read only" in str(err).lower():
                raise ReadOnlyDatabase(
                    "The database is open read-only, so the label was not stored."
                ) from err
            raise
        self.invalidate()
        return sorted(int(r[0]) for r in rows)

    def labels(self, limit: int = 200) -> pd.DataFrame:
        """The latest confirmations, newest first."""
        frame = self._query(
            "SELECT label_id, event_id, device, epoch_us(created_at) AS created_us, home_id, "
            "source FROM labels WHERE coalesce(home_id, ?) = ? ORDER BY label_id DESC LIMIT ?",
            [self.home_id, self.home_id, int(limit)],
        )
        frame.insert(1, "created_at", _to_naive_utc(frame.pop("created_us")))
        return frame

    # -- devices and energy ---------------------------------------------------------------
    def house_energy_per_day(self, start: Any, end: Any) -> pd.DataFrame:
        """Per UTC day: whole-house energy (Wh), always-on base (W and Wh), hours covered.

        The base is the 2nd percentile of the day's one-minute mean power: what never switches
        off. Energy sums the minute means, so gaps in the readings are not counted as zero.
        """
        lo, hi = self.check_range(start, end)
        sql = (
            "WITH m AS (SELECT epoch_us(ts) // 60000000 AS minute, "
            "avg(a_act_power + b_act_power) AS p FROM readings "
            "WHERE home_id = $home AND ts >= $lo AND ts < $hi GROUP BY 1) "
            "SELECT minute // 1440 AS day, sum(p) / 60.0 AS energy_wh, "
            "quantile_cont(p, 0.02) AS base_w, count(*) / 60.0 AS hours "
            "FROM m GROUP BY 1 ORDER BY 1"
        )

        def compute() -> pd.DataFrame:
            frame = self._query(sql, {"home": self.home_id, "lo": lo, "hi": hi})
            frame.insert(0, "date", pd.to_datetime(frame.pop("day").astype("int64"), unit="D"))
            frame["base_wh"] = frame["base_w"] * frame["hours"]
            return frame

        return self._cached(("house_energy", self.home_id, lo, hi), self._ttl(hi), compute)

    def device_energy_per_day(self, start: Any, end: Any) -> pd.DataFrame:
        """Per UTC day and device: energy (Wh) and runs, from the `activations` table."""
        lo, hi = self.check_range(start, end)
        sql = (
            "SELECT epoch_us(start_ts) // 86400000000 AS day, "
            "coalesce(device, '(unknown)') AS device, sum(energy_wh) AS energy_wh, "
            "count(*) AS runs FROM activations "
            f"WHERE home_id = $home AND {self._not_abandoned} "
            "AND start_ts >= $lo AND start_ts < $hi GROUP BY ALL ORDER BY 1"
        )

        def compute() -> pd.DataFrame:
            frame = self._query(sql, {"home": self.home_id, "lo": lo, "hi": hi})
            frame.insert(0, "date", pd.to_datetime(frame.pop("day").astype("int64"), unit="D"))
            frame["energy_wh"] = frame["energy_wh"].fillna(0.0)
            return frame

        return self._cached(("device_energy", self.home_id, lo, hi), self._ttl(hi), compute)

    def device_summary(self, start: Any, end: Any) -> pd.DataFrame:
        """One row per device: energy, share of the house, runs per day, typical power, last seen.

        Devices come from activations and from events, so a device the flow recognises but has
        not yet paired on and off still appears (with its events and no energy).
        """
        lo, hi = self.check_range(start, end)
        days = max((hi - lo).total_seconds() / 86400.0, 1e-9)
        sql = (
            "WITH a AS (SELECT coalesce(device, '(unknown)') AS device, sum(energy_wh) AS "
            "energy_wh, count(*) AS runs, median(power_w) AS typical_w, "
            "max(coalesce(end_ts, start_ts)) AS last_run FROM activations "
            f"WHERE home_id = $home AND {self._not_abandoned} "
            "AND start_ts >= $lo AND start_ts < $hi GROUP BY 1), "
            f"ev AS (SELECT coalesce(l.confirmed_device, e.device, '(unknown)') AS device, "
            "count(*) AS events, median(abs(e.delta_p_w)) AS typical_step_w, "
            "max(e.ts) AS last_event FROM events e "
            f"LEFT JOIN {_LATEST_LABEL} l USING (event_id) "
            "WHERE e.home_id = $home AND e.ts >= $lo AND e.ts < $hi GROUP BY 1) "
            "SELECT device, coalesce(a.energy_wh, 0) AS energy_wh, coalesce(a.runs, 0) AS runs, "
            "coalesce(a.typical_w, ev.typical_step_w) AS typical_w, "
            "coalesce(ev.events, 0) AS events, "
            "epoch_us(greatest(a.last_run, ev.last_event)) AS last_seen_us "
            "FROM a FULL OUTER JOIN ev USING (device) ORDER BY energy_wh DESC, events DESC"
        )

        def compute() -> pd.DataFrame:
            frame = self._query(sql, {"home": self.home_id, "lo": lo, "hi": hi})
            frame["last_seen"] = _to_naive_utc(frame.pop("last_seen_us"))
            frame["runs_per_day"] = frame["runs"] / days
            total = self._house_total_wh(lo, hi)
            frame["share"] = frame["energy_wh"] / total if total > 0 else 0.0
            return frame

        return self._cached(("summary", self.home_id, lo, hi), self._ttl(hi), compute)

    def _house_total_wh(self, lo: datetime, hi: datetime) -> float:
        house = self.house_energy_per_day(lo, hi)
        return float(house["energy_wh"].sum()) if not house.empty else 0.0

    def energy_breakdown(self, start: Any, end: Any) -> dict[str, float]:
        """Whole-house energy over the range split into devices, always-on and unexplained (Wh).

        Unexplained is what is left of the house's energy after the always-on base and every
        device's activations; it is never below zero.
        """
        house = self.house_energy_per_day(start, end)
        devices = self.device_energy_per_day(start, end)
        total = float(house["energy_wh"].sum()) if not house.empty else 0.0
        base = float(house["base_wh"].sum()) if not house.empty else 0.0
        known = float(devices["energy_wh"].sum()) if not devices.empty else 0.0
        return {
            "total_wh": total,
            "always_on_wh": base,
            "always_on_w": float(house["base_w"].iloc[-1]) if not house.empty else 0.0,
            "devices_wh": known,
            "unexplained_wh": max(total - base - known, 0.0),
        }

    def activations(self, start: Any, end: Any, limit: int = 20_000) -> pd.DataFrame:
        """Device runs that overlap the range: the timeline of which device ran when."""
        lo, hi = self.check_range(start, end)
        sql = (
            "SELECT coalesce(device, '(unknown)') AS device, legs, epoch_us(start_ts) AS start_us, "
            "epoch_us(coalesce(end_ts, start_ts)) AS end_us, power_w, energy_wh, "
            "end_ts IS NULL AS running FROM activations WHERE home_id = $home "
            f"AND {self._not_abandoned} "
            "AND start_ts < $hi AND coalesce(end_ts, start_ts) >= $lo "
            "ORDER BY start_ts LIMIT $limit"
        )

        def compute() -> pd.DataFrame:
            frame = self._query(sql, {"home": self.home_id, "lo": lo, "hi": hi, "limit": limit})
            frame.insert(0, "start", _to_naive_utc(frame.pop("start_us")))
            frame.insert(1, "end", _to_naive_utc(frame.pop("end_us")))
            return frame

        return self._cached(("activations", self.home_id, lo, hi), self._ttl(hi), compute)

    # -- unknowns and health --------------------------------------------------------------
    def clusters(self, unnamed_only: bool = True) -> pd.DataFrame:
        """Unknown-device clusters, largest first; by default only those nobody has named.

        A cluster is named by a name on its row (the flow's) or by a "cluster:<id>" label (the
        dashboard's, shown at once, before the flow answers). `name` is that name, or the
        device most often confirmed among its events.
        """
        sql = (
            "WITH cl AS (SELECT substr(event_id, $skip) AS cluster_id, "
            "arg_max(device, label_id) AS device FROM labels "
            "WHERE starts_with(event_id, $prefix) GROUP BY 1) "
            "SELECT c.cluster_id, c.n_events, c.typical_delta_p_w, c.legs, "
            "epoch_us(c.last_seen) AS last_seen_us, "
            "coalesce(c.name, cl.device, (SELECT mode(l.device) FROM labels l JOIN events e "
            "USING (event_id) WHERE e.cluster_id = c.cluster_id)) AS name, "
            "coalesce(c.name, cl.device) IS NOT NULL AS named "
            "FROM clusters c LEFT JOIN cl USING (cluster_id) WHERE c.home_id = $home "
            "ORDER BY c.n_events DESC NULLS LAST, c.cluster_id"
        )

        def compute() -> pd.DataFrame:
            params = {"home": self.home_id, "prefix": CLUSTER_LABEL_PREFIX,
                      "skip": len(CLUSTER_LABEL_PREFIX) + 1}  # fmt: skip
            frame = self._query(sql, params)
            frame["last_seen"] = _to_naive_utc(frame.pop("last_seen_us"))
            return frame

        frame = self._cached(("clusters", self.home_id), self.live_ttl_s * 5, compute)
        if unnamed_only:
            frame = frame[~frame["named"]].reset_index(drop=True)
        return frame

    def cluster_examples(self, per_cluster: int = 5) -> pd.DataFrame:
        """The latest few events of each cluster."""
        sql = (
            f"SELECT * FROM (SELECT {_EVENT_COLUMNS}, row_number() OVER "
            "(PARTITION BY cluster_id ORDER BY ts DESC) AS k FROM events "
            "WHERE home_id = $home AND cluster_id IS NOT NULL) WHERE k <= $n "
            "ORDER BY cluster_id, ts_us DESC"
        )

        def compute() -> pd.DataFrame:
            frame = self._query(sql, {"home": self.home_id, "n": int(per_cluster)})
            frame.insert(0, "ts", _to_naive_utc(frame.pop("ts_us")))
            return frame

        return self._cached(("cluster_examples", self.home_id), self.live_ttl_s * 5, compute)

    def alerts(self, limit: int = 200) -> pd.DataFrame:
        """Health alerts, newest first: what changed, since when, by how much."""
        sql = (
            "SELECT alert_id, device, epoch_us(ts) AS ts_us, metric, "
            "epoch_us(since_ts) AS since_us, before_value, after_value, message FROM alerts "
            "WHERE home_id = $home ORDER BY ts DESC LIMIT $limit"
        )

        def compute() -> pd.DataFrame:
            frame = self._query(sql, {"home": self.home_id, "limit": int(limit)})
            frame.insert(1, "ts", _to_naive_utc(frame.pop("ts_us")))
            frame.insert(2, "since", _to_naive_utc(frame.pop("since_us")))
            before = frame["before_value"].where(frame["before_value"] != 0)
            frame["change"] = frame["after_value"] / before - 1.0
            return frame

        return self._cached(("alerts", self.home_id), self.live_ttl_s * 5, compute)


class FleetStore:
    """The homes of one or more DuckDB files (a fleet's shards) and a `DataStore` for each.

    A fleet stores each home in one file (`Settings.shard_paths`), so a home's store queries
    and labels through that file's connection: a label lands in the `labels` table of the
    shard whose flow partition learns it.

    Parameters
    ----------
    connections
        One connection per file, in shard order; the stores take a cursor of each per thread.
    preferred
        The home shown first when the files hold it (else the first home by id).
    clock, live_ttl_s, history_ttl_s
        Passed to every `DataStore`.
    homes_ttl_s
        How long the list of homes is reused (listing scans every file's readings).

    Examples
    --------
    >>> import duckdb
    >>> from nilm.schema import SCHEMA_SQL
    >>> shards = [duckdb.connect(":memory:fleet0"), duckdb.connect(":memory:fleet1")]
    >>> for con, home in zip(shards, ["oak", "elm"]):
    ...     _ = con.execute(SCHEMA_SQL)
    ...     _ = con.execute("INSERT INTO readings (home_id, ts) VALUES (?, now())", [home])
    >>> fleet = FleetStore(shards)
    >>> fleet.homes(), fleet.default_home
    (['elm', 'oak'], 'elm')
    >>> fleet.store("oak").connection is shards[0], fleet.store("elm").connection is shards[1]
    (True, True)
    """

    def __init__(
        self,
        connections: list[duckdb.DuckDBPyConnection] | tuple[duckdb.DuckDBPyConnection, ...],
        preferred: str | None = None,
        clock: Callable[[], datetime] | None = None,
        live_ttl_s: float = 1.0,
        history_ttl_s: float = 300.0,
        homes_ttl_s: float = 30.0,
    ) -> None:
        if not connections:
            raise ValueError("a fleet store needs at least one database connection")
        self.connections = list(connections)
        self.preferred = preferred
        self.clock = clock
        self.live_ttl_s = live_ttl_s
        self.history_ttl_s = history_ttl_s
        self.homes_ttl_s = homes_ttl_s
        self._lock = threading.Lock()
        self._stores: dict[tuple[int, str | None], DataStore] = {}
        self._shard_of: dict[str, int] = {}
        self._listed_until = -math.inf

    def _listing(self) -> dict[str, int]:
        now = time.monotonic()
        with self._lock:
            if now < self._listed_until:
                return dict(self._shard_of)
        found: dict[str, int] = {}
        for k, con in enumerate(self.connections):
            cur = con.cursor()
            try:
                rows = cur.execute(
                    "SELECT DISTINCT home_id FROM readings "
                    "UNION SELECT DISTINCT home_id FROM events"
                ).fetchall()
            finally:
                cur.close()
            for (home,) in rows:
                found.setdefault(str(home), k)
        with self._lock:
            self._shard_of = found
            self._listed_until = now + self.homes_ttl_s
        return dict(found)

    def homes(self) -> list[str]:
        """Every home with readings or events in any of the files, sorted by id."""
        return sorted(self._listing())

    @property
    def default_home(self) -> str | None:
        """The home a new page shows: the preferred one if stored, else the first by id."""
        listing = self._listing()
        if self.preferred is not None and (self.preferred in listing or not listing):
            return self.preferred
        return min(listing) if listing else None

    def store(self, home_id: str | None = None) -> DataStore:
        """The store of `home_id` (default: `default_home`), over the file that holds it.

        A home not (yet) in any file is shown from the first file, empty until it arrives.
        """
        home = home_id if home_id is not None else self.default_home
        shard = self._listing().get(home, 0) if home is not None else 0
        key = (shard, home)
        with self._lock:
            existing = self._stores.get(key)
        if existing is not None:
            return existing
        made = DataStore(
            self.connections[shard], home, self.clock, self.live_ttl_s, self.history_ttl_s
        )
        with self._lock:
            return self._stores.setdefault(key, made)

    @property
    def read_only(self) -> bool:
        """Whether no label can be stored (every file is open read-only)."""
        return all(_is_read_only(con) for con in self.connections)

    def close(self) -> None:
        """Close the cursors the stores opened (not the connections given)."""
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()
