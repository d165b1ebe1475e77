from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from flows.database import DatabaseLocked, open_database


def test_an_older_file_gains_the_columns_added_since(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE activations (activation_id VARCHAR PRIMARY KEY, home_id VARCHAR)")
    con.execute("CREATE TABLE clusters (cluster_id VARCHAR PRIMARY KEY, home_id VARCHAR)")
    con.close()
    con = open_database(db)
    columns = {r[0] for r in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'activations'"
    ).fetchall()}  # fmt: skip
    assert {"off_power_w", "duration_s", "abandoned"} <= columns
    con.close()
    open_database(db).close()  # and opening again changes nothing


def test_a_file_held_by_another_process_is_named_in_the_error(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    open_database(db).close()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, sys; c = duckdb.connect({str(db)!r}); print('held', flush=True); "
         "sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DatabaseLocked, match="in use by another process"):
            open_database(db, read_only=True)
    finally:
        holder.communicate("")
