"""Shared fixtures: databases written by the real flow, as the dashboard meets them.

`flow_file` is the session's `demo_db` (tests/conftest.py): the demo's own path, once per test
session, without a dashboard: half a day of the simulated household streamed through the
dataflow into DuckDB, then a simulated user confirms two events of each device and the flow,
still running, learns them for the next simulated hours. So the pages are tested on the columns
and values the flow writes, not on invented rows.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from dashboards.store import DataStore
from nilm.schema import SCHEMA_SQL

T0 = datetime(2026, 1, 5, tzinfo=UTC)
FIXED_NOW = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def flow_file(demo_db: Path) -> Path:
    """The database the real flow wrote (see the module's docstring); tests copy or read it."""
    return demo_db


@pytest.fixture(scope="session")
def flow_connection(flow_file: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect(str(flow_file), read_only=True)
    yield con
    con.close()


@pytest.fixture
def store(flow_connection: duckdb.DuckDBPyConnection) -> DataStore:
    """A store over the flow's database (read-only); tests that write labels use `fresh_store`."""
    return DataStore(flow_connection, clock=lambda: FIXED_NOW)


@pytest.fixture
def flow_copy(flow_file: Path, tmp_path: Path) -> Path:
    """A private copy of the flow's database file."""
    path = tmp_path / "copy.duckdb"
    shutil.copyfile(flow_file, path)
    return path


@pytest.fixture
def fresh_store(flow_copy: Path) -> Iterator[DataStore]:
    """A writable store over its own copy of the flow's database, for tests that label."""
    con = duckdb.connect(str(flow_copy))
    yield DataStore(con, clock=lambda: FIXED_NOW)
    con.close()


@pytest.fixture
def empty_store() -> Iterator[DataStore]:
    """A store over a database with the schema and no rows at all."""
    con = duckdb.connect()
    con.execute(SCHEMA_SQL)
    yield DataStore(con, clock=lambda: FIXED_NOW)
    con.close()


def label_count(store: DataStore) -> int:
    """Labels the test's store wrote (its clock says `FIXED_NOW`; the flow's user wrote the
    others at the wall-clock time)."""
    row = (
        store.connection.cursor()
        .execute("SELECT count(*) FROM labels WHERE created_at = ?", [FIXED_NOW])
        .fetchone()
    )
    assert row is not None
    return int(row[0])


def scalar(store: DataStore, sql: str, params: list[object] | None = None) -> object:
    row = store.connection.cursor().execute(sql, params or []).fetchone()
    assert row is not None
    return row[0]
