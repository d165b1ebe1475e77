"""Batch models in `nilm eval`: XGBoost, a CNN and an LSTM on the online run's events and labels.

`nilm eval --models river,xgboost,cnn,lstm` must compare models on the same events and the same
confirmations. The online run (`nilm.evaluation.Evaluation` with the flow's `HomeLearner`)
decides which events the simulated user confirms and when: this module replays that run once,
recording each event's feature dict (the one the online classifier saw), every confirmation with
its time, and the online answers; cuts each event's window from the readings; and then runs
`nilm.batch.compare.compare`, which retrains the batch models every `retrain_every_s` from the
confirmations given before that moment. All models are scored on the events the online figures
count (known device, not confirmed, not held out).

A name is `KIND` (every imbalance option of that kind: `xgboost` gives its `none` figures, with
each option under `by_imbalance`) or `KIND:OPTION` (`cnn:focal`). torch and xgboost are imported
only when such a name is asked for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from nilm.batch.compare import Confirmation, ModelResult, ModelSpec, compare, format_table
from nilm.batch.model import IMBALANCE_OPTIONS, EventSamples
from nilm.batch.windows import EventWindow, EventWindower
from nilm.evaluation import Evaluation
from nilm.learning import HomeLearner, TableRow
from nilm.records import Event, Label, ReadingBatch, TruthEvent, to_epoch_us

__all__ = [
    "LabelledStream",
    "batch_models_section",
    "batch_specs",
    "event_windows",
    "is_batch_model",
    "labelled_stream",
    "run_batch_models",
]

log = logging.getLogger(__name__)

ONLINE = "river"
ONLINE_CLASSIFIER = "river:classifier"


def is_batch_model(name: str) -> bool:
    """Whether `nilm eval --models` should hand `name` to this module.

    >>> is_batch_model("cnn:focal"), is_batch_model("xgboost"), is_batch_model("knn:oversample")
    (True, True, False)
    """
    return name.partition(":")[0] in IMBALANCE_OPTIONS


def batch_specs(names: Iterable[str], fast: bool = False) -> list[ModelSpec]:
    """The model specs the names ask for, in order, without repeats.

    >>> [s.name for s in batch_specs(["xgboost", "cnn:focal"])]
    ['xgboost/none', 'xgboost/smote', 'xgboost/class_weight', 'cnn/focal']
    """
    specs: list[ModelSpec] = []
    for name in names:
        kind, _, option = name.partition(":")
        if kind not in IMBALANCE_OPTIONS:
            raise ValueError(f"unknown batch model {name!r}; kinds: {sorted(IMBALANCE_OPTIONS)}")
        options = IMBALANCE_OPTIONS[kind]
        if option and option not in options:
            raise ValueError(f"{kind} has no imbalance option {option!r}; choose from {options}")
        for imbalance in (option,) if option else options:
            spec = ModelSpec(kind, imbalance)
            if spec not in specs:
                specs.append(spec)
    return specs


class _RecordingLearner:
    """The flow's learner, composed: records each event's features, answers and the labels."""

    def __init__(self, inner: HomeLearner) -> None:
        self.inner = inner
        self.features: dict[str, dict[str, float]] = {}
        self.answers: dict[str, str | None] = {}
        self.labels: list[Label] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def on_event(self, event: Event) -> list[TableRow]:
        rows = self.inner.on_event(event)
        seen = self.inner.recent.get(event.event_id)
        if seen is not None:
            self.features[event.event_id] = dict(seen.x)
            # Labels are learned only in on_label, so the classifier answers as it did inside.
            proba = self.inner.classifier.predict_proba_one(seen.x)
            self.answers[event.event_id] = (
                max(sorted(proba), key=lambda d: proba[d]) if proba else None
            )
        return rows

    def on_label(self, label: Label) -> list[TableRow]:
        self.labels.append(label)
        return self.inner.on_label(label)


@dataclass(frozen=True, slots=True)
class LabelledStream:
    """The online run's events in order, what is scored, what was confirmed and answered.

    `truth[i]` is None for events not scored (no true switch, or a held-out device);
    `online[i]` is the flow's answer (None when it flagged the event novel or knew nothing);
    `online_classifier[i]` the online classifier's own answer before novelty gating.
    """

    events: list[Event]
    truth: list[str | None]
    features: list[dict[str, float]]
    confirmations: list[Confirmation]
    online: list[str | None]
    online_classifier: list[str | None]
    online_result: dict[str, Any]


def labelled_stream(
    events: Sequence[Event],
    truth: Sequence[TruthEvent],
    label_budget: int,
    holdout: Sequence[str] | None = None,
    seed: int = 0,
    learner_factory: Callable[[str], HomeLearner] | None = None,
) -> LabelledStream:
    """Run the online evaluation over `events` and record what the batch models need."""
    build = learner_factory or (lambda home: HomeLearner(home, seed=seed))
    learners: list[_RecordingLearner] = []

    def recording(home: str) -> Any:
        learners.append(_RecordingLearner(build(home)))
        return learners[-1]

    ev = Evaluation(truth, label_budget, holdout=holdout, learner_factory=recording)
    for event in sorted(events, key=lambda e: (e.ts, e.event_id)):
        ev.feed_event(event)
    result = ev.result()
    features: dict[str, dict[str, float]] = {}
    answers: dict[str, str | None] = {}
    labels: list[Label] = []
    for learner in learners:
        features.update(learner.features)
        answers.update(learner.answers)
        labels += learner.labels
    scored = [s for s in ev.scored if s.event.event_id in features]
    return LabelledStream(
        events=[s.event for s in scored],
        truth=[s.truth_device if s.truth_device not in ev.holdout else None for s in scored],
        features=[features[s.event.event_id] for s in scored],
        confirmations=[
            Confirmation(lab.event_id, lab.device, to_epoch_us(lab.created_at)) for lab in labels
        ],
        online=[s.device for s in scored],
        online_classifier=[answers[s.event.event_id] for s in scored],
        online_result=result,
    )


def event_windows(
    batches: Iterable[ReadingBatch],
    events: Sequence[Event],
    before_s: int = 30,
    after_s: int = 90,
) -> list[EventWindow]:
    """Each event's window, cut as the readings stream past (one `EventWindower` per home)."""
    by_home: dict[str, list[Event]] = {}
    for e in sorted(events, key=lambda e: e.ts):
        by_home.setdefault(e.home_id, []).append(e)
    windowers: dict[str, EventWindower] = {}
    cursor: dict[str, int] = {}
    out: list[EventWindow] = []
    for batch in batches:
        if len(batch) == 0:
            continue
        home = batch.home_id
        w = windowers.setdefault(home, EventWindower(home, before_s, after_s))
        pending = by_home.get(home, [])
        start = cursor.get(home, 0)
        end_us = int(batch.ts_us[-1])
        stop = start
        while stop < len(pending) and to_epoch_us(pending[stop].ts) <= end_us:
            stop += 1
        cursor[home] = stop
        out += w.update(batch, pending[start:stop])
    for home, w in windowers.items():
        late = by_home.get(home, [])[cursor.get(home, 0) :]
        w.update(ReadingBatch.empty(home), late)
        out += w.flush()
    return out


def run_batch_models(
    stream: LabelledStream,
    windows: Sequence[EventWindow],
    specs: Sequence[ModelSpec],
    retrain_every_s: float = 6 * 3600.0,
    seed: int = 0,
    clock: Callable[[], float] | None = time.perf_counter,
) -> list[ModelResult]:
    """The batch models' figures, then the online learner's on the same events."""
    by_id = {w.event_id: w.values for w in windows}
    missing = [e.event_id for e in stream.events if e.event_id not in by_id]
    if missing:
        raise ValueError(
            f"{len(missing)} events have no window (first {missing[0]}): give "
            "readings that cover every event"
        )
    samples = EventSamples.from_dicts(
        stream.features,
        [by_id[e.event_id] for e in stream.events],
        names=sorted({k for x in stream.features for k in x}),
    )
    return compare(
        stream.events,
        samples,
        stream.features,
        stream.truth,
        stream.confirmations,
        specs,
        retrain_every_s=retrain_every_s,
        seed=seed,
        clock=clock,
        fixed={ONLINE: stream.online, ONLINE_CLASSIFIER: stream.online_classifier},
    )


def batch_models_section(
    batches: Sequence[ReadingBatch],
    events: Sequence[Event],
    truth: Sequence[TruthEvent],
    label_budget: int,
    models: Sequence[str],
    holdout: Sequence[str] | None = None,
    retrain_every_s: float = 6 * 3600.0,
    seed: int = 0,
    learner_factory: Callable[[str], HomeLearner] | None = None,
) -> tuple[dict[str, Any], str]:
    """`{name: {"macro_f1", "per_device", ...}}` for each batch model name, and the table.

    The table has a row per model and imbalance option, then the online learner's rows (`river`
    as the flow answers, `river:classifier` before novelty gating) on the same events. The
    readings `batches` must cover the events (their windows are cut from them).
    `learner_factory` builds the online learner whose run decides the labels (default: the
    flow's `HomeLearner(home_id, seed=seed)`); pass the one the online figures used.
    """
    names = [m for m in models if is_batch_model(m)]
    specs = batch_specs(names)
    if not specs:
        return {}, ""
    stream = labelled_stream(
        events, truth, label_budget, holdout=holdout, seed=seed, learner_factory=learner_factory
    )
    windows = event_windows(batches, stream.events)
    results = run_batch_models(stream, windows, specs, retrain_every_s, seed)
    by_spec = {r.name: r.as_dict() for r in results}
    section: dict[str, Any] = {}
    for name in names:
        kind, _, option = name.partition(":")
        if option:
            section[name] = by_spec[f"{kind}/{option}"]
        else:
            section[name] = dict(by_spec[f"{kind}/none"])
            section[name]["by_imbalance"] = {
                o: by_spec[f"{kind}/{o}"] for o in IMBALANCE_OPTIONS[kind]
            }
    table = format_table(results)
    return section, table
