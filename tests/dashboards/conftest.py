"""Shared fixtures: small sample databases (simulated readings and derived results)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from dashboards.sample import fill_sample_database
from dashboards.store import DataStore
from nilm.schema import SCHEMA_SQL

T0 = datetime(2026, 1, 5, tzinfo=UTC)
FIXED_NOW = datetime(2026, 1, 7, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def sample_connection(sample_file: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """Half a day of a simulated house with events, runs, a cluster and an alert (read-mostly)."""
    con = duckdb.connect(str(sample_file), read_only=True)
    yield con
    con.close()


@pytest.fixture
def store(sample_connection: duckdb.DuckDBPyConnection) -> DataStore:
    """A store over the shared sample; tests that write labels use `fresh_store`."""
    return DataStore(sample_connection, clock=lambda: FIXED_NOW)


@pytest.fixture(scope="session")
def sample_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same half day as a database file, written once; tests copy it."""
    path = tmp_path_factory.mktemp("sample") / "sample.duckdb"
    con = duckdb.connect(str(path))
    fill_sample_database(con, days=0.5, start=T0)
    con.close()
    return path


@pytest.fixture
def sample_copy(sample_file: Path, tmp_path: Path) -> Path:
    """A private copy of the sample database file."""
    path = tmp_path / "copy.duckdb"
    shutil.copyfile(sample_file, path)
    return path


@pytest.fixture
def fresh_store(sample_copy: Path) -> Iterator[DataStore]:
    """A store over its own copy of the sample, for tests that write labels."""
    con = duckdb.connect(str(sample_copy))
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
    row = store.connection.cursor().execute("SELECT count(*) FROM labels").fetchone()
    assert row is not None
    return int(row[0])
