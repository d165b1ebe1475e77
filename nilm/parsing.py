"""Turn what a Shelly, its logger or a REDD file says into readings, and bad rows into reasons.

Three shapes come in: an `EM.GetStatus` result (a dict), rows of the Shelly logger format
(`timestamp_utc` and `a_`/`b_` columns, Parquet or CSV), and REDD mains CSV (`datetime,1 mains,2
mains`, active power only). Each parser returns a `ReadingBatch` of the rows it could read and a
`Rejection` for every row it could not; nothing here raises on bad data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from nilm.records import (
    READING_COLUMNS,
    Reading,
    ReadingBatch,
    Rejection,
    to_epoch_us,
)

__all__ = [
    "LOGGER_COLUMNS",
    "REDD_COLUMNS",
    "ParseError",
    "parse_em_status",
    "parse_logger_rows",
    "parse_redd_rows",
    "parse_timestamp",
    "sniff_format",
]

LOGGER_COLUMNS = ("timestamp_utc", *READING_COLUMNS)
REDD_COLUMNS = ("datetime", "1 mains", "2 mains")
# The REDD extract carries local time with no zone; REDD house 1 is in Massachusetts.
REDD_UTC_OFFSET_H = -4
REDD_MEASURED = ("a_act_power", "b_act_power")


class ParseError(ValueError):
    """A value that cannot be read as what it should be."""


def parse_timestamp(value: object) -> datetime:
    """A timezone-aware UTC datetime from an ISO string, epoch seconds or a datetime.

    Naive values are taken as UTC, which is what the Shelly logger writes.

    >>> parse_timestamp("2025-12-12T08:00:00.5Z").isoformat()
    '2025-12-12T08:00:00.500000+00:00'
    >>> parse_timestamp(0).isoformat()
    '1970-01-01T00:00:00+00:00'
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ParseError(f"timestamp {value!r} is not a finite number")
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str) and value.strip():
        text = value.strip().replace("Z", "+00:00")
        try:
            ts = datetime.fromisoformat(text)
        except ValueError as err:
            raise ParseError(f"timestamp {value!r} is not ISO 8601") from err
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    raise ParseError(f"timestamp {value!r} is empty or of type {type(value).__name__}")


def _number(row: Mapping[str, Any], name: str) -> float:
    if name not in row:
        raise ParseError(f"field {name!r} is missing")
    value = row[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ParseError(f"field {name!r} is empty")
    if isinstance(value, bool):
        raise ParseError(f"field {name!r} is a boolean ({value!r}), not a number")
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise ParseError(f"field {name!r} = {value!r} is not a number") from err


def parse_em_status(result: Mapping[str, Any], ts: datetime) -> Reading:
    """A reading of legs a and b from an `EM.GetStatus` result taken at `ts`.

    The Pro 3EM also reports a `c_` leg (unused on a split-phase panel), `n_current` (null
    without a neutral clamp), totals and, on newer firmware, error flags: all ignored here.
    Raises `ParseError` naming the first missing or unreadable field.

    >>> status = {f"{leg}_{q}": 1.0 for leg in "ab" for q in
    ...           ("voltage", "current", "act_power", "aprt_power", "pf", "freq")}
    >>> parse_em_status(status, datetime(2025, 1, 1, tzinfo=UTC)).total_act_power_w
    2.0
    """
    values = [_number(result, name) for name in READING_COLUMNS]
    return Reading(parse_timestamp(ts), *values)


def _raw(row: Mapping[str, Any] | Sequence[Any]) -> str:
    try:
        return json.dumps(row if isinstance(row, Mapping) else list(row), default=str)[:2000]
    except (TypeError, ValueError):
        return repr(row)[:2000]


def _batch(
    home_id: str,
    seqs: list[int],
    ts_us: list[int],
    rows: list[Sequence[float]],
    measured: tuple[str, ...] = READING_COLUMNS,
) -> ReadingBatch:
    values = np.array(rows, dtype=np.float64).reshape(len(rows), len(READING_COLUMNS))
    return ReadingBatch(
        home_id,
        np.array(seqs, dtype=np.int64),
        np.array(ts_us, dtype=np.int64),
        {name: values[:, i].copy() for i, name in enumerate(READING_COLUMNS)},
        measured,
    )


def parse_logger_rows(
    rows: Iterable[Mapping[str, Any]], home_id: str, source: str, first_seq: int = 0
) -> tuple[ReadingBatch, list[Rejection]]:
    """Rows in the Shelly logger format; `seq` counts rows from `first_seq` in `source`.

    A row that carries its own `seq` (the Pi agent numbers its readings) keeps it.
    """
    seqs: list[int] = []
    stamps: list[int] = []
    values: list[Sequence[float]] = []
    rejections: list[Rejection] = []
    for position, row in enumerate(rows, start=first_seq):
        seq = position
        try:
            if "seq" in row:
                seq = int(row["seq"])
            ts = parse_timestamp(row.get("timestamp_utc"))
            vals = [_number(row, name) for name in READING_COLUMNS]
        except (ParseError, AttributeError, TypeError, ValueError) as err:
            rejections.append(Rejection(home_id, f"{source}#{seq}", _raw(row), str(err)))
            continue
        seqs.append(seq)
        stamps.append(to_epoch_us(ts))
        values.append(vals)
    return _batch(home_id, seqs, stamps, values), rejections


def parse_redd_rows(
    rows: Iterable[Sequence[str]], home_id: str, source: str, first_seq: int = 0
) -> tuple[ReadingBatch, list[Rejection]]:
    """REDD mains rows `(datetime, mains 1, mains 2)`: legs a and b, active power only.

    Quantities REDD does not measure stay NaN, and validation knows not to ask for them.
    """
    nan = math.nan
    seqs: list[int] = []
    stamps: list[int] = []
    values: list[Sequence[float]] = []
    rejections: list[Rejection] = []
    for seq, row in enumerate(rows, start=first_seq):
        try:
            if len(row) != 3:
                raise ParseError(f"expected 3 fields (datetime, 1 mains, 2 mains), got {len(row)}")
            local = parse_timestamp(row[0])
            ts_us = to_epoch_us(local) - REDD_UTC_OFFSET_H * 3_600_000_000
            mains = [_number({"mains": cell}, "mains") for cell in row[1:]]
        except ParseError as err:
            rejections.append(Rejection(home_id, f"{source}#{seq}", _raw(row), str(err)))
            continue
        seqs.append(seq)
        stamps.append(ts_us)
        values.append([nan, nan, mains[0], nan, nan, nan, nan, nan, mains[1], nan, nan, nan])
    return _batch(home_id, seqs, stamps, values, REDD_MEASURED), rejections


def sniff_format(header: Sequence[str]) -> str:
    """'logger' or 'redd' from a header row; raises `ParseError` saying what is missing.

    >>> sniff_format(["datetime", "1 mains", "2 mains"])
    'redd'
    """
    names = [h.strip() for h in header]
    if tuple(names[:3]) == REDD_COLUMNS:
        return "redd"
    missing = [c for c in LOGGER_COLUMNS if c not in names]
    if not missing:
        return "logger"
    raise ParseError(
        f"unknown columns {names[:8]}: the Shelly logger format needs {missing} too, "
        f"and REDD mains starts with {list(REDD_COLUMNS)}"
    )

