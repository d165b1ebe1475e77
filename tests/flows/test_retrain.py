"""`nilm retrain`: a batch model from the confirmed labels in DuckDB, served by the flow."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

# The batch extra is part of the dev extra that `make test` installs: imported plainly, so a
# broken install fails here instead of skipping.
import torch  # noqa: F401
import xgboost  # noqa: F401
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.cli import main
from flows.database import DatabaseLocked, open_database
from flows.dataflow import get_flow
from flows.retrain import TrainingSet, load_training_set, run_retrain
from flows.sink import DuckDBSink, write_items
from nilm.batch.features import event_from_row, learner_feature_rows
from nilm.batch.served import ServedModel
from nilm.batch.windows import EventWindow, window_features
from nilm.learning import event_row
from nilm.records import Event, ReadingBatch, ReadingChunk
from nilm.settings import Settings
from nilm.simulator import HouseholdSimulator, SimulatorConfig

HOME = "casa"


def _evening() -> tuple[list[ReadingBatch], list]:
    """18:00-21:00 of a simulated day (about 50 switches) in 10-minute batches, and its truth."""
    sim = HouseholdSimulator(SimulatorConfig(seed=5, home_id=HOME))
    day, truth = sim.day(0)
    start = int(day.ts_us[0]) + 18 * 3_600_000_000
    batches = []
    for k in range(18):
        lo, hi = start + k * 600_000_000, start + (k + 1) * 600_000_000
        batches.append(day[(day.ts_us >= lo) & (day.ts_us < hi)])
    end = start + 3 * 3_600_000_000
    return batches, [t for t in truth if start <= t.ts.timestamp() * 1e6 < end]


def _chunks(batches: list[ReadingBatch]) -> list:
    return [(HOME, ReadingChunk("sim", b)) for b in batches]


@pytest.fixture(scope="module")
def labelled_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A database the flow filled, with every event matched to the truth confirmed."""
    path = tmp_path_factory.mktemp("retrain") / "home.duckdb"
    batches, truth = _evening()
    con = open_database(path)
    try:
        run_main(get_flow(Settings(), TestingSource(_chunks(batches)), DuckDBSink(con)))
        events = con.execute("SELECT event_id, ts FROM events ORDER BY ts").fetchall()
        confirmed = {}
        for event_id, ts in events:
            near = [t for t in truth if abs((t.ts - ts).total_seconds()) <= 2]
            if near:
                confirmed[event_id] = near[0].device
        con.executemany(
            "INSERT INTO labels (event_id, device, created_at, home_id, source) "
            "VALUES (?, ?, ?, ?, 'test')",
            [[e, d, datetime(2026, 2, 1, tzinfo=UTC), HOME] for e, d in confirmed.items()],
        )
    finally:
        con.close()
    return path, confirmed


@pytest.fixture(scope="module")
def early_labels_db(
    labelled_db: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The same database with only the first two hours' confirmations: the last is held out."""
    db, _ = labelled_db
    path = tmp_path_factory.mktemp("retrain-early") / "home.duckdb"
    shutil.copy(db, path)
    con = open_database(path)
    try:
        con.execute(
            "DELETE FROM labels WHERE event_id IN (SELECT event_id FROM events "
            "WHERE ts >= (SELECT min(ts) FROM events) + INTERVAL 2 HOUR)"
        )
    finally:
        con.close()
    return path


def held_out(full_db: Path, needs_windows: bool = False) -> tuple[TrainingSet, list[int]]:
    """Every confirmed event as samples, and the rows of those in the held-out last hour."""
    con = open_database(full_db, read_only=True)
    try:
        everything = load_training_set(con, needs_windows=needs_windows)
        # Samples come in (ts, event_id) order, one per confirmed event of a device with
        # enough confirmations to train on.
        late = con.execute(
            "SELECT e.ts >= (SELECT min(ts) FROM events) + INTERVAL 2 HOUR, l.device "
            "FROM events e JOIN labels l USING (event_id) ORDER BY e.ts, e.event_id"
        ).fetchall()
    finally:
        con.close()
    late = [(is_late, d) for is_late, d in late if d not in everything.left_out]
    assert [d for _, d in late] == everything.devices
    return everything, [i for i, (is_late, _) in enumerate(late) if is_late]


def test_retrain_trains_on_the_confirmed_events_and_the_model_recognises_new_ones(
    labelled_db: tuple[Path, dict[str, str]], early_labels_db: Path, tmp_path: Path
) -> None:
    db, confirmed = labelled_db
    out = tmp_path / "models" / "casa.batch"
    n = run_retrain(early_labels_db, "xgboost", out, echo=lambda _line: None)
    served = ServedModel(out)
    con = open_database(early_labels_db, read_only=True)
    try:
        training = load_training_set(con)
    finally:
        con.close()
    assert n == len(training.devices) >= 20 and len(served.classes) >= 4
    assert served.classes == set(training.devices) <= set(confirmed.values())
    # Scored on the last hour's events, which the model never saw (of the devices it knows).
    everything, later = held_out(db)
    later = [i for i in later if everything.devices[i] in served.classes]
    assert len(later) >= 5
    names = everything.samples.feature_names
    right = sum(
        served.predict_one(dict(zip(names, everything.samples.features[i], strict=True)))
        == everything.devices[i]
        for i in later
    )
    # About 20 confirmations to learn from: at least twice what guessing among its devices gets.
    assert right >= 2 * len(later) / len(served.classes), (right, len(later), served.classes)


def test_the_flow_serves_the_retrained_model_behind_the_learner(
    labelled_db: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    db, _confirmed = labelled_db
    out = tmp_path / "casa.batch"
    run_retrain(db, "xgboost:class_weight", out, echo=lambda _line: None)
    settings = Settings(batch_model_path=str(tmp_path / "{home_id}.batch"))
    rows: list = []
    run_main(get_flow(settings, TestingSource(_chunks(_evening()[0])), TestingSink(rows)))
    finals = (r for t, r in rows if t == "events" and not r["provisional"])
    events = sorted(finals, key=lambda r: (r["ts"], r["event_id"]))
    served = ServedModel(out)
    x = learner_feature_rows([event_from_row(r) for r in events], [r["device"] for r in events])
    # A fresh flow's River models know no label: every confidence is the served model's.
    assert len(events) >= 30
    for row, features in zip(events, x, strict=True):
        proba = served.predict_proba_one(features)
        assert row["confidence"] == pytest.approx(max(proba.values()))
        assert row["device"] in (None, max(sorted(proba), key=lambda d: proba[d]))


def test_too_few_labels_or_devices_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "few.duckdb"
    con = open_database(db)
    t0 = datetime(2026, 1, 5, tzinfo=UTC)
    events = [
        Event(f"e{i}", HOME, t0.replace(minute=i), "a", 100.0 + i, 0.0, 100.0, 1.0, 0.0,
              0.0, 100.0, 100.0, 0.0, 120.0)
        for i in range(4)
    ]  # fmt: skip
    write_items(con, [event_row(e) for e in events])
    con.executemany(
        "INSERT INTO labels (event_id, device, created_at) VALUES (?, ?, ?)",
        [["e0", "tv", t0], ["e1", "tv", t0], ["e2", "lamp", t0]],
    )
    con.close()
    with pytest.raises(ValueError, match=r"too few confirmed labels.*lamp: 1, tv: 2"):
        run_retrain(db, "xgboost", tmp_path / "m", echo=lambda _line: None)
    assert not (tmp_path / "m").exists()
    assert main(["retrain", "--db", str(db), "--model", "xgboost:focal", "--out", "m"]) == 2


def test_retrain_says_plainly_when_a_flow_holds_the_database(
    labelled_db: tuple[Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = labelled_db
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb; c = duckdb.connect({str(db)!r}); print('held', "
         "flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DatabaseLocked):
            run_retrain(db, "xgboost", tmp_path / "m", echo=lambda _line: None)
        out = tmp_path / "m"
        assert main(["retrain", "--db", str(db), "--out", str(out)]) == 2
        assert "in use by another process" in capsys.readouterr().err
        assert not out.exists()
    finally:
        holder.communicate("\n", timeout=30)
    assert main(["retrain", "--db", str(db), "--out", str(out)]) == 0
    assert "trained xgboost/none for home 'casa'" in capsys.readouterr().out
    assert ServedModel(out).classes


def test_a_network_trains_on_the_stored_windows_and_recognises_new_ones(
    labelled_db: tuple[Path, dict[str, str]], early_labels_db: Path, tmp_path: Path
) -> None:
    db, _ = labelled_db
    out = tmp_path / "casa.lstm"
    run_retrain(early_labels_db, "lstm", out, echo=lambda _line: None)
    everything, later = held_out(db, needs_windows=True)
    assert everything.samples.windows.shape[1:] == (4, 120)
    served = ServedModel(out)
    later = [i for i in later if everything.devices[i] in served.classes]
    assert len(later) >= 5
    right = 0
    for i in later:
        x = dict(zip(everything.samples.feature_names, everything.samples.features[i],
                     strict=True))  # fmt: skip
        # At event time there is no window yet: a network has no answer, River answers.
        assert served.predict_proba_one(x) == {}
        w = EventWindow("e", HOME, datetime(2026, 1, 1, tzinfo=UTC), 30,
                        everything.samples.windows[i])  # fmt: skip
        right += served.predict_one(x | window_features(w)) == everything.devices[i]
    # Events the network never saw: at least twice what guessing among its devices gets.
    assert right >= 2 * len(later) / len(served.classes), (right, len(later), served.classes)
