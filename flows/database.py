"""Opening the DuckDB file: one owner per file (see ARCHITECTURE.md), schema on first open."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

from nilm.schema import MIGRATIONS_SQL, SCHEMA_SQL

__all__ = ["DatabaseLocked", "open_database"]

log = logging.getLogger(__name__)


class DatabaseLocked(RuntimeError):
    """Another process holds the DuckDB file: only one process may open it at a time."""


def open_database(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A connection to the database at `path`, with the schema created if it is writable.

    Raises `DatabaseLocked` when another process owns the file, naming the file.
    """
    path = Path(path)
    if read_only and not path.exists():
        raise FileNotFoundError(f"database {path} does not exist; run 'nilm replay' or 'nilm demo'")
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as err:
        if "lock" in str(err).lower():
            raise DatabaseLocked(
                f"database {path} is in use by another process (a running 'nilm run' or "
                f"'nilm demo' owns it): open that process's dashboard instead, or stop it first"
            ) from err
        raise
    if not read_only:
        con.execute(SCHEMA_SQL)
        con.execute(MIGRATIONS_SQL)
    return con
