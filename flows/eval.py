"""`nilm eval`: accuracy of the whole chain on recorded or simulated readings with ground truth.

The figures need a simulated user who reads the labelling queue and answers with what the truth
says, which closes a loop from the learner's outputs back to its label input. The dataflow
delivers labels through a polled table, asynchronously, so the loop would depend on timing. This
driver therefore runs the flow's own per-home objects directly, in the flow's order and with the
flow's settings (`ReadingValidator` -> `HomeEventDetector` -> `HomeLearner`, the classes the
dataflow keeps in its state), on the same chunks the replay source yields: the same code path
without the engine, and reproducible. `tests/flows/test_eval.py` checks that the events found this
way are those the dataflow writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from flows.recordings import read_truth_csv
from flows.sources import read_file_chunks
from nilm.classification import CLASSIFIERS, IMBALANCE
from nilm.detection import HomeEventDetector
from nilm.evaluation import Evaluation
from nilm.learning import HomeLearner
from nilm.records import Event, ReadingBatch, TruthEvent
from nilm.settings import Settings
from nilm.validation import ReadingValidator, ValidationLimits

__all__ = ["detect_events", "evaluate_events", "model_names", "read_batches", "run_eval"]

log = logging.getLogger(__name__)

# The online pipeline as the flow runs it: prequential selection among these candidates.
DEFAULT_MODELS = ("knn", "knn1", "hoeffding")


def model_names() -> list[str]:
    """What `--models` accepts: `river` (the flow's selector), or `NAME[:IMBALANCE]` for one
    River classifier with an imbalance strategy, e.g. `knn:oversample`."""
    return ["river", *(f"{m}:{s}" for m in CLASSIFIERS for s in IMBALANCE)]


def read_batches(
    paths: Sequence[Path], settings: Settings | None = None
) -> Iterator[ReadingBatch]:
    """The accepted readings of the files, validated as the flow validates them."""
    settings = settings or Settings()
    limits = ValidationLimits(voltage_v=(settings.voltage_min_v, settings.voltage_max_v))
    validator = ReadingValidator(limits)
    for path in paths:
        for _, chunk in read_file_chunks(path, settings.home_id):
            accepted, _rejected = validator.validate(chunk.batch, chunk.source)
            if len(accepted):
                yield accepted


def detect_events(batches: Sequence[ReadingBatch], settings: Settings | None = None) -> list[Event]:
    """The events the flow's detector finds in `batches` (one home per detector, flushed)."""
    settings = settings or Settings()
    detectors: dict[str, HomeEventDetector] = {}
    events: list[Event] = []
    for batch in batches:
        det = detectors.get(batch.home_id)
        if det is None:
            det = detectors[batch.home_id] = HomeEventDetector(
                batch.home_id, min_event_w=settings.min_event_w, detector=settings.detector
            )
        events += det.update(batch)
    for det in detectors.values():
        events += det.flush()
    return events


def _learner_factory(models: tuple[str, ...], imbalance: str, seed: int) -> Any:
    def build(home_id: str) -> HomeLearner:
        return HomeLearner(home_id, models=models, imbalance=imbalance, seed=seed)

    return build


def _parse_model(name: str) -> tuple[tuple[str, ...], str]:
    if name == "river":
        return DEFAULT_MODELS, "none"
    model, _, imbalance = name.partition(":")
    if model not in CLASSIFIERS or (imbalance or "none") not in IMBALANCE:
        raise ValueError(f"unknown model {name!r}; choose from {model_names()}")
    return (model,), imbalance or "none"


def evaluate_events(
    events: Sequence[Event],
    truth: Sequence[TruthEvent],
    label_budget: int = 10,
    models: tuple[str, ...] = DEFAULT_MODELS,
    imbalance: str = "none",
    holdout: Sequence[str] | None = None,
    degraded: dict[str, datetime] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The evaluation figures of a learner over already detected events."""
    ev = Evaluation(
        truth,
        label_budget,
        holdout=holdout,
        degraded=degraded,
        learner_factory=_learner_factory(models, imbalance, seed),
    )
    for event in sorted(events, key=lambda e: (e.ts, e.event_id)):
        ev.feed_event(event)
    result = ev.result()
    learner = next(iter(ev.learners.values()), None)
    if learner is not None:
        result["classification"]["selected"] = learner.classifier.best
        result["classification"]["prequential_on_labels"] = {
            k: round(v, 4) for k, v in learner.classifier.report().items()
        }
    return result


def run_eval(
    readings_paths: Sequence[Path],
    truth_path: Path,
    label_budget: int = 10,
    models: Sequence[str] | None = None,
    holdout: Sequence[str] | None = None,
    degraded: dict[str, datetime] | None = None,
    settings: Settings | None = None,
    on_table: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Figures for `nilm eval` (see CONTRACT.md), as one JSON-ready dict.

    `models` adds `"models": {name: {"macro_f1", "per_device", ...}}`, one run per name of
    `model_names()` (online) or of the batch models (`xgboost`, `cnn`, `lstm`, optionally
    `:IMBALANCE`), the batch ones retrained from the confirmations the online run had at each
    point of the stream; `on_table` receives their comparison table as text. `holdout` names
    devices the simulated user never labels (default: those first seen after the first third
    of the truth); `degraded` maps devices to the time they start degrading (for the drift delay).
    """
    truth = read_truth_csv(Path(truth_path))
    batches = list(read_batches([Path(p) for p in readings_paths], settings))
    events = detect_events(batches, settings)
    log.info("eval: %s readings, %s events, %s truth events",
             sum(len(b) for b in batches), len(events), len(truth))  # fmt: skip
    result = evaluate_events(events, truth, label_budget, holdout=holdout, degraded=degraded)
    if models:
        from flows.batch_eval import batch_models_section, is_batch_model

        result["models"] = {}
        for name in [m for m in models if not is_batch_model(m)]:
            chosen, imbalance = _parse_model(name)
            r = evaluate_events(
                events, truth, label_budget, chosen, imbalance, holdout=holdout, degraded=degraded
            )
            result["models"][name] = {
                "macro_f1": r["classification"]["macro_f1"],
                "per_device": r["classification"]["per_device"],
                "novelty_roc_auc": r["novelty"]["roc_auc"],
            }
        batch_names = [m for m in models if is_batch_model(m)]
        if batch_names:
            section, table = batch_models_section(
                batches, events, truth, label_budget, batch_names, holdout=holdout,
                learner_factory=_learner_factory(DEFAULT_MODELS, "none", 0),
            )  # fmt: skip
            result["models"].update(section)
            if on_table is not None:
                on_table(table)
    return result
