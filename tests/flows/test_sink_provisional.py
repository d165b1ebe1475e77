"""The sink's side of revisable events: detected_at, refinements, retractions, settlement and
labels on provisional events that go."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from flows.database import open_database
from flows.sink import write_items
from nilm.learning import event_row
from nilm.provisional import SETTLE_TABLE, Settlement
from nilm.records import Event

T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)


def event(event_id: str, second: int, dp: float = 500.0, legs: str = "a", **kw: object) -> Event:
    return Event(
        event_id, "h", T0 + timedelta(seconds=second), legs, dp, 0.3 * dp, dp, dp / 120, 0.0,
        100.0, 100.0 + dp, dp, 0.0, 120.0, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture
def con(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    c = open_database(tmp_path / "s.duckdb")
    yield c
    c.close()


def write(con: duckdb.DuckDBPyConnection, *items: Event | Settlement) -> None:
    write_items(
        con.cursor(),
        [
            (SETTLE_TABLE, x.row()) if isinstance(x, Settlement) else event_row(x)
            for x in items
        ],
    )


def rows(con: duckdb.DuckDBPyConnection) -> dict[str, tuple]:
    got = con.execute(
        "SELECT event_id, delta_p_w, provisional, detected_at FROM events ORDER BY event_id"
    ).fetchall()
    return {r[0]: r[1:] for r in got}


def test_detected_at_is_the_first_write_and_is_kept_on_updates(con) -> None:
    write(con, event("e1", 10, 700.0, provisional=True))
    (dp, provisional, first) = rows(con)["e1"]
    assert (dp, provisional) == (700.0, True) and first.tzinfo is not None
    assert abs((datetime.now(UTC) - first).total_seconds()) < 60
    write(con, event("e1", 10, 520.0, provisional=True))  # the inrush decays
    write(con, event("e1", 10, 500.0))  # final
    assert rows(con)["e1"] == (500.0, False, first)


def test_a_provisional_answer_never_overwrites_a_final_row(con) -> None:
    write(con, event("e1", 10, 500.0))
    write(con, event("e1", 10, 900.0, provisional=True))  # replayed after a restart
    assert rows(con)["e1"][:2] == (500.0, False)


def test_retraction_and_settlement_remove_provisional_rows_only(con) -> None:
    write(
        con,
        event("final", 5),
        event("gone", 6, provisional=True),
        event("early", 7, provisional=True),
        event("late", 30, provisional=True),
    )
    write(con, Settlement("h", retracted=("gone", "final")))
    assert sorted(rows(con)) == ["early", "final", "late"]
    write(con, Settlement("h", settled_before=T0 + timedelta(seconds=20)))
    assert sorted(rows(con)) == ["final", "late"]
    write(con, Settlement("other-home", everything=True))
    assert sorted(rows(con)) == ["final", "late"]
    write(con, Settlement("h", everything=True))
    assert sorted(rows(con)) == ["final"]


def test_rows_before_a_settlement_in_one_batch_are_written_before_it(con) -> None:
    write(con, event("e1", 10, provisional=True))
    # retracted, then shown again in the same sink batch: it must stay
    write(con, Settlement("h", retracted=("e1",)), event("e1", 10, provisional=True))
    assert "e1" in rows(con)


def label(con: duckdb.DuckDBPyConnection, event_id: str, device: str) -> None:
    con.execute(
        "INSERT INTO labels (event_id, device, created_at, home_id, source) "
        "VALUES (?, ?, ?, 'h', 'dashboard')",
        [event_id, device, T0 + timedelta(minutes=5)],
    )


def test_a_label_on_a_replaced_provisional_event_is_carried_to_the_final_one(con) -> None:
    shown = event("ea", 10, 1500.0, provisional=True)
    write(con, shown)
    label(con, "ea", "ev charger")
    # the second leg joined: the tracker withdraws 'a', shows 'ab'; the labelled row waits
    write(con, Settlement("h", retracted=("ea",)), replace(shown, event_id="eab", legs="ab"))
    assert "ea" in rows(con)
    write(con, event("eab", 11, 3000.0, legs="ab"))  # final, a second later
    write(con, Settlement("h", settled_before=T0 + timedelta(seconds=20)))
    assert sorted(rows(con)) == ["eab"]
    labels = con.execute(
        "SELECT event_id, device, created_at, source FROM labels ORDER BY label_id"
    ).fetchall()
    assert [r[:2] for r in labels] == [("ea", "ev charger"), ("eab", "ev charger")]
    assert labels[1][2] == labels[0][2] and "ea" in labels[1][3]
    # settled again (a replay after a crash): nothing more is carried
    write(con, Settlement("h", everything=True))
    assert con.execute("SELECT count(*) FROM labels").fetchone() == (2,)


def test_a_label_on_a_provisional_event_that_was_nothing_is_kept(con) -> None:
    write(con, event("blip", 10, provisional=True), event("far", 60))
    label(con, "blip", "kettle")
    write(con, Settlement("h", everything=True))
    assert sorted(rows(con)) == ["far"]
    assert con.execute("SELECT event_id, device FROM labels").fetchall() == [("blip", "kettle")]
