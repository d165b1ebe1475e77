"""HomeLearner serving a batch model from a file, River answering whenever the file cannot."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

# The batch extra is in the dev extra `make test` installs: a missing xgboost must fail.
import xgboost  # noqa: F401

from nilm.batch.features import feature_matrix, learner_feature_rows
from nilm.batch.model import EventSamples, make_model
from nilm.batch.served import save_model
from nilm.learning import HomeLearner
from nilm.records import Event, Label
from tests.nilm.test_learning import events_row, make_event

DEVICES = ("fridge", "heater", "microwave")


def _train(names: dict[str, str], seed: int = 0) -> tuple[list[Event], object]:
    """An XGBoost model on the learner's own feature dicts; device d is called names[d]."""
    events: list[Event] = []
    y: list[str] = []
    for i in range(8):
        for k, device in enumerate(DEVICES):
            jitter = 0.01 * ((i * 3 + k) % 5 - 2)
            events.append(make_event(device, 60 * i + 10 * k, True, jitter))
            y.append(names[device])
    rows = learner_feature_rows(events, y)
    names_ = tuple(sorted(rows[0]))
    samples = EventSamples(feature_matrix(rows, names_), np.zeros((len(rows), 1, 1), "f4"), names_)
    model = make_model("xgboost", n_estimators=20, seed=seed).fit(samples, y)
    return events, model


def _save(path: Path, names: dict[str, str]) -> None:
    save_model(_train(names)[1], path)


def _device(learner: HomeLearner, event: Event) -> str | None:
    return events_row(learner.on_event(event))["device"]


def _taught(path: Path, check_every: int = 100) -> HomeLearner:
    """A learner whose River models (and novelty detector) learned the three devices' labels."""
    learner = HomeLearner("h", seed=0, batch_model_path=str(path), batch_check_every=check_every)
    events, _model = _train({d: d for d in DEVICES})
    for i, event in enumerate(events):
        learner.on_event(event)
        device = DEVICES[i % len(DEVICES)]
        learner.on_label(Label(i + 1, "h", event.event_id, device, event.ts))
    return learner


SERVED = {d: f"served-{d}" for d in DEVICES}


def test_a_served_model_answers_with_its_own_classes(tmp_path: Path) -> None:
    path = tmp_path / "home.batch"
    _save(path, SERVED)
    learner = _taught(path)
    answers = [_device(learner, make_event(d, 1000 + 10 * k)) for k, d in enumerate(DEVICES)]
    assert answers == [SERVED[d] for d in DEVICES]
    row = events_row(learner.on_event(make_event("heater", 1100)))
    assert row["device"] == "served-heater" and 0.5 < row["confidence"] <= 1.0


def test_river_answers_while_the_file_is_missing_and_the_file_is_picked_up(
    tmp_path: Path,
) -> None:
    path = tmp_path / "home.batch"
    learner = _taught(path, check_every=1)
    assert _device(learner, make_event("heater", 1000)) == "heater"  # River: no file yet
    _save(path, SERVED)
    assert _device(learner, make_event("heater", 1030)) == "served-heater"
    # A retrained model replaces the file: the learner serves it from the next event on.
    other = tmp_path / "retrained.batch"
    _save(other, {d: f"new-{d}" for d in DEVICES})
    os.replace(other, path)
    assert _device(learner, make_event("heater", 1060)) == "new-heater"


def test_an_unreadable_file_leaves_the_answers_to_river(tmp_path: Path) -> None:
    path = tmp_path / "home.batch"
    path.write_bytes(b"not a model")
    learner = _taught(path)
    assert learner.served is not None and learner.served.model is None
    assert _device(learner, make_event("fridge", 1000)) == "fridge"


def test_a_serving_learner_pickles_clones_and_repeats_itself(tmp_path: Path) -> None:
    path = tmp_path / "home.batch"
    _save(path, SERVED)
    stream = [make_event(d, 1000 + 10 * i, i % 2 == 0) for i, d in enumerate(DEVICES * 4)]

    def run(learner: HomeLearner, events: list[Event]) -> list[tuple]:
        return [(r["device"], r["confidence"]) for r in map(lambda e: _row(learner, e), events)]

    a = _taught(path)
    b = pickle.loads(pickle.dumps(a))
    assert run(a, stream) == run(b, stream)
    assert any(device == "served-heater" for device, _ in run(_taught(path), stream))
    c = a.clone()
    assert (c.batch_model_path, c.served is not None) == (str(path), True)


def _row(learner: HomeLearner, event: Event) -> dict:
    return events_row(learner.on_event(event))
