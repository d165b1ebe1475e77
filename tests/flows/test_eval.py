"""`nilm eval` figures, and the label loop through the real dataflow with recovery."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.dataflow import get_flow
from flows.eval import detect_events, model_names, read_batches, run_eval
from flows.recordings import write_simulation
from nilm.records import Label, ReadingChunk
from nilm.settings import Settings
from nilm.simulator import HouseholdSimulator, SimulatorConfig


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("eval")
    readings, truth = folder / "home.parquet", folder / "truth.csv"
    write_simulation(SimulatorConfig(seed=31), 1.0, readings, truth, progress=False)
    return readings, truth


ONLINE, BATCH = ["river", "knn:oversample", "knn"], ["xgboost"]


@pytest.fixture(scope="module")
def evaluated(recording: tuple[Path, Path]) -> tuple[dict, list[str]]:
    """One `nilm eval` of the day with online and batch models (each run takes seconds), and
    the comparison table it hands on."""
    readings, truth = recording
    tables: list[str] = []
    result = run_eval(
        [readings], truth, label_budget=5, models=ONLINE + BATCH, on_table=tables.append
    )
    return result, tables


def test_eval_prints_the_contract_figures(evaluated: tuple[dict, list[str]]) -> None:
    result, _ = evaluated
    json.dumps(result)  # one JSON object
    assert set(result) >= {"events", "classification", "novelty", "drift", "models"}
    assert set(result["events"]) == {"precision", "recall", "f1"}
    # 0.99 on the easy simulator, 0.88 once its appliances decayed, wandered and stepped like
    # measured ones (issue 10), and back above 0.9 with a segmenter that knows those shapes.
    assert result["events"]["f1"] > 0.9
    assert {"macro_f1", "per_device"} <= set(result["classification"])
    assert result["classification"]["macro_f1"] > 0.7
    assert result["novelty"]["roc_auc"] is not None and result["novelty"]["roc_auc"] > 0.8
    assert {"alerts", "false_alarms"} <= set(result["drift"])
    # The user never spends more than the budget on a device.
    assert max(result["labels"].values()) <= 5
    assert set(result["models"]) == set(ONLINE + BATCH)
    assert result["models"]["river"]["macro_f1"] == result["classification"]["macro_f1"]
    assert "knn:weights" in model_names()


@pytest.mark.parametrize(
    ("name", "message"),
    [("nope", "unknown model"), ("knn:nope", "unknown model"), ("cnn:nope", "no imbalance option")],
)
def test_eval_refuses_an_unknown_model_before_reading(
    tmp_path: Path, name: str, message: str
) -> None:
    # Files that do not exist: a name is refused before a week of readings is read and evaluated.
    with pytest.raises(ValueError, match=message):
        run_eval([tmp_path / "missing.parquet"], tmp_path / "missing.csv", models=[name])


def test_eval_finds_the_events_the_dataflow_writes(recording: tuple[Path, Path]) -> None:
    readings, _ = recording
    from flows.sources import read_file_chunks

    chunks = [("home", chunk) for _, chunk in read_file_chunks(readings, "home")]
    out: list = []
    run_main(get_flow(Settings(), TestingSource(chunks), TestingSink(out)))
    flow_ids = {r["event_id"] for t, r in out if t == "events" and not r["provisional"]}
    eval_ids = {e.event_id for e in detect_events(list(read_batches([readings])))}
    assert flow_ids and flow_ids == eval_ids


def test_a_label_mid_stream_reaches_the_learner_once_across_restarts(tmp_path: Path) -> None:
    """Run 1 sees readings; run 2 receives a confirmation; run 3 gets the rest of the readings
    and, as at-least-once delivery may do after a restart, the same confirmation again."""
    sim = HouseholdSimulator(SimulatorConfig(seed=8))
    chunks = [("home", ReadingChunk("sim", b)) for b, _ in sim.iter_batches(0.25, 900)]
    db = tmp_path / "recovery"
    db.mkdir()
    init_db_dir(db, 1)

    def run(upto: int, labels: list) -> list:
        out: list = []
        flow = get_flow(
            Settings(), TestingSource(chunks[:upto]), TestingSink(out), TestingSource(labels)
        )
        run_main(flow, epoch_interval=timedelta(seconds=0), recovery_config=RecoveryConfig(db))
        return [row for table, row in out if table == "events" and not row["provisional"]]

    def fridge_like(row: dict) -> bool:
        # the simulator's fridge: 95 W once its inrush has decayed (the event carries the decay)
        return row["legs"] == "a" and 75 <= row["delta_p_w"] <= 160

    first = run(8, [])
    fridge = [r for r in first if fridge_like(r)]
    assert fridge and all(r["device"] is None for r in first)
    label = Label(1, "home", fridge[0]["event_id"], "fridge", fridge[0]["ts"])

    second = run(8, [("home", label)])
    # The confirmed event is written again as confirmed; no readings were left to read, and the
    # other rows are earlier events answered again by the updated model (none of them labelled).
    assert [(r["event_id"], r["device"], r["labelled"]) for r in second if r["labelled"]] == [
        (label.event_id, "fridge", True)
    ]
    assert all(r["event_id"] in {f["event_id"] for f in first} for r in second)

    third = run(len(chunks), [("home", label), ("home", label)])
    assert not [r for r in third if r["labelled"]], "a replayed label was learned again"
    later = [r for r in third if fridge_like(r)]
    assert later and later[0]["device"] == "fridge"
    assert later[0]["ts"] > fridge[-1]["ts"]


def test_eval_compares_a_batch_model_on_the_same_events(
    evaluated: tuple[dict, list[str]],
) -> None:
    result, tables = evaluated
    xgb = result["models"]["xgboost"]
    # In one day only the frequent devices have events left after their five labels.
    devices = len(xgb["per_device"])
    assert devices >= 2 and xgb["macro_f1"] > 1.0 / devices + 0.2  # well above chance
    assert set(xgb["by_imbalance"]) == {"none", "smote", "class_weight"}
    assert "xgboost/smote" in tables[0] and "river" in tables[0]
