"""Labels and corrections take effect in every mode that writes events: replay, demo and run.

A user labels an event in the dashboard (`DataStore.confirm_label`) or with `nilm label`, and
later corrects it. After the next replay, demo or run the event carries the newest confirmation,
the learner has learned that device and not the old one, and later events of the same appliance
are predicted as it.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from dashboards.store import DataStore
from flows.app import replay
from flows.cli import main
from flows.database import open_database
from flows.dataflow import get_flow
from flows.recordings import write_simulation
from flows.sink import DuckDBSink
from flows.sources import LabelSource
from nilm.learning import HomeLearner
from nilm.records import Event, Label, ReadingChunk
from nilm.settings import Settings
from nilm.simulator import HouseholdSimulator, SimulatorConfig

# A quiet night: the fridge and the freezer cycle, and the fridge defrosts once.
DAYS = 0.15
SEED = 5
# The correction's name sorts after the first: a learner that kept both would break the tie
# towards the first and the test would see it.
FIRST, CORRECTED = "fridge", "kettle"


def switch_ons(db: Path) -> list[tuple[str, str | None, float, bool]]:
    """(event_id, device, confidence, labelled) of the stored switch-ons, in time order."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT event_id, device, confidence, labelled FROM events "
            "WHERE delta_p_w > 0 ORDER BY ts"
        ).fetchall()
    return [(r[0], r[1], float(r[2]), bool(r[3])) for r in rows]


def assert_recognised_as(db: Path, labelled_id: str, device: str, labels: int) -> None:
    ons = switch_ons(db)
    assert len(ons) >= 5, ons
    assert ons[0] == (labelled_id, device, 1.0, True)
    # The learner holds the newest confirmation alone: later cycles it recognises are that
    # device, with nothing left of the old one to share the vote (others it finds novel).
    recognised = [(d, c, lab) for _, d, c, lab in ons[1:] if d is not None]
    assert len(recognised) >= 2 and set(recognised) == {(device, 1.0, False)}, ons
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM labels").fetchone() == (labels,)
        others = con.execute(
            "SELECT count(*) FROM events WHERE device IS NOT NULL AND device <> ?", [device]
        ).fetchone()
    assert others == (0,)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("labels") / "morning.parquet"
    write_simulation(SimulatorConfig(seed=SEED), DAYS, out, None)
    return out


def test_label_then_correction_in_the_dashboard_then_replay(
    recording: Path, tmp_path: Path
) -> None:
    settings = Settings(db_path=str(tmp_path / "x.duckdb"))
    replay([recording], settings, progress=False)
    ons = switch_ons(Path(settings.db_path))
    assert ons and all(d is None and not lab for _, d, _, lab in ons)  # nothing learned yet
    first = ons[0][0]

    for device, labels in ((FIRST, 1), (CORRECTED, 2)):
        con = open_database(settings.db_path)
        try:
            DataStore(con).confirm_label(first, device)
        finally:
            con.close()
        replay([recording], settings, progress=False)
        assert_recognised_as(Path(settings.db_path), first, device, labels)

    # Labelled events survive another replay unchanged.
    before = switch_ons(Path(settings.db_path))
    replay([recording], settings, progress=False)
    assert switch_ons(Path(settings.db_path)) == before


def test_label_then_correction_with_nilm_label_then_demo(tmp_path: Path) -> None:
    db = tmp_path / "demo.duckdb"
    demo = ["demo", "--db", str(db), "--days", str(DAYS), "--backfill-days", str(DAYS),
            "--seed", str(SEED), "--speed", "100000", "--no-dashboard",
            "--confirm-per-device", "0"]  # fmt: skip
    assert main(demo) == 0
    first = switch_ons(db)[0][0]

    # As a script would: the installed command, in its own process.
    nilm = Path(sys.executable).with_name("nilm")
    done = subprocess.run(
        [str(nilm), "label", first, FIRST, "--db", str(db)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"event {first} is {FIRST!r}" in done.stdout
    assert main(demo) == 0
    assert_recognised_as(db, first, FIRST, 1)

    assert main(["label", first, CORRECTED, "--db", str(db)]) == 0
    assert main(demo) == 0
    assert_recognised_as(db, first, CORRECTED, 2)


def test_a_correction_replaces_what_the_learner_learned() -> None:
    sim = HouseholdSimulator(SimulatorConfig(seed=SEED))
    _batch, truth = sim.day(0)
    fridge = next(t for t in truth if t.kind == "on" and t.device == "fridge")
    learner = HomeLearner("home", seed=0)

    def event(i: int) -> Event:  # the fridge switching on again, i cycles later
        dp, ts = fridge.delta_p_w, fridge.ts + timedelta(minutes=35 * i)
        return Event(f"e{i}", "home", ts, fridge.legs, dp, 0.2 * dp, dp * 1.02, dp / 120, 0.0,
                     80.0, 80.0 + dp, dp, 0.0, 120.0)  # fmt: skip

    learner.on_event(event(0))
    learner.on_label(Label(1, "home", "e0", FIRST, fridge.ts))
    assert learner.classifier.classes == {FIRST}
    rows = learner.on_label(Label(2, "home", "e0", CORRECTED, fridge.ts))
    assert rows[0][1]["device"] == CORRECTED and rows[0][1]["labelled"]
    assert learner.classifier.classes == {CORRECTED}  # the old device is forgotten
    assert learner.classifier.predict_proba_one(learner.recent["e0"].x) == {CORRECTED: 1.0}
    assert learner.on_event(event(1))[-1][1]["device"] == CORRECTED


def test_the_label_input_resumes_after_a_restart_without_passing_a_label_twice(
    tmp_path: Path,
) -> None:
    con = open_database(str(tmp_path / "x.duckdb"))
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)

    def store(*labels: tuple[str, str]) -> None:
        for event_id, device in labels:
            con.execute(
                "INSERT INTO events (event_id, home_id, ts, legs, delta_p_w) VALUES "
                "(?, 'home', ?, 'a', 100) ON CONFLICT DO NOTHING",
                [event_id, datetime(2026, 1, 5, tzinfo=UTC)],
            )
            con.execute(
                "INSERT INTO labels (event_id, device, created_at) VALUES (?, ?, ?)",
                [event_id, device, datetime(2026, 1, 6, tzinfo=UTC)],
            )

    def run_once() -> list[tuple[int, str, str]]:
        polls = itertools.count()
        source = LabelSource(con, poll_s=0.0, finished=lambda: next(polls) >= 3)
        out: list[tuple[str, Label]] = []
        flow = Dataflow("labels")
        op.output("out", op.input("in", flow, source), TestingSink(out))
        run_main(flow, recovery_config=RecoveryConfig(str(recovery)))
        return [(label.label_id, label.event_id, label.device) for _, label in out]

    store(("e1", FIRST), ("e2", "oven"))
    assert run_once() == [(1, "e1", FIRST), (2, "e2", "oven")]
    assert run_once() == []  # a restart with nothing new passes nothing again
    store(("e1", CORRECTED))
    assert run_once() == [(3, "e1", CORRECTED)]
    con.close()


def test_run_with_recovery_learns_a_label_and_its_correction_once_each(tmp_path: Path) -> None:
    # `nilm run`'s shape: readings and the label input through the flow, with recovery, stopped
    # and started again between the user's confirmations.
    db = tmp_path / "x.duckdb"
    settings = Settings(db_path=str(db))
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init_db_dir(recovery, 1)
    sim = HouseholdSimulator(SimulatorConfig(seed=SEED))
    chunks = [("home", ReadingChunk("sim", b)) for b, _ in sim.iter_batches(DAYS, 900)]

    def run_flow() -> None:
        con = open_database(str(db))
        try:
            polls = itertools.count()
            labels = LabelSource(con, poll_s=0.0, finished=lambda: next(polls) >= 3)
            flow = get_flow(settings, TestingSource(chunks), DuckDBSink(con), labels)
            run_main(flow, recovery_config=RecoveryConfig(str(recovery)))
        finally:
            con.close()

    def confirm(event_id: str, device: str) -> None:
        con = open_database(str(db))
        try:
            DataStore(con).confirm_label(event_id, device)
        finally:
            con.close()

    run_flow()
    first = switch_ons(db)[0][0]
    confirm(first, FIRST)
    run_flow()  # the readings resume at their end: only the label is new
    ons = switch_ons(db)
    assert ons[0] == (first, FIRST, 1.0, True)
    confirm(first, CORRECTED)
    run_flow()
    assert switch_ons(db)[0] == (first, CORRECTED, 1.0, True)
