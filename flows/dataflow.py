"""The dataflow: readings → validation → per-home event detection → learning → DuckDB.

Every stateful step keeps an object from `nilm/` per home, so Bytewax recovery snapshots the
validator's clock, the detectors and the models together with the sources' positions.
Steps are keyed by home: a 240 V load steps both legs at once, so a home's legs meet in one
detector, and homes spread across workers and processes by key.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulLogic
from bytewax.outputs import Sink

from nilm.detection import HomeEventDetector
from nilm.learning import HomeLearner, TableRow
from nilm.records import Event, Label, ReadingBatch, ReadingChunk, Rejection
from nilm.settings import Settings
from nilm.validation import ReadingValidator, ValidationLimits

__all__ = ["get_flow"]

Validated = tuple[ReadingBatch, list[Rejection]]
LearnerInput = tuple[str, Event | Label]


def _validate(
    settings: Settings,
) -> Any:
    limits = ValidationLimits(voltage_v=(settings.voltage_min_v, settings.voltage_max_v))

    def step(
        state: ReadingValidator | None, chunk: ReadingChunk
    ) -> tuple[ReadingValidator, Validated]:
        validator = state if state is not None else ReadingValidator(limits)
        accepted, rejected = validator.validate(chunk.batch, chunk.source)
        return validator, (accepted, [*chunk.rejections, *rejected])

    return step


class _DetectLogic(StatefulLogic[ReadingBatch, list[Event], HomeEventDetector | None]):
    """Runs a home's detector, and flushes what it holds back when a finite input ends.

    The detector is built on the home's first batch, which names the home.
    """

    def __init__(self, settings: Settings, detector: HomeEventDetector | None) -> None:
        self.settings = settings
        self.detector = detector

    def on_item(self, value: ReadingBatch) -> tuple[Iterable[list[Event]], bool]:
        if self.detector is None:
            self.detector = HomeEventDetector(
                value.home_id,
                min_event_w=self.settings.min_event_w,
                detector=self.settings.detector,
            )
        return [self.detector.update(value)], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[list[Event]], bool]:
        flushed = self.detector.flush() if self.detector is not None else []
        return [flushed], StatefulLogic.RETAIN

    def snapshot(self) -> HomeEventDetector | None:
        return self.detector


def _learn(state: HomeLearner | None, item: LearnerInput) -> tuple[HomeLearner, list[TableRow]]:
    _kind, value = item
    learner = state if state is not None else HomeLearner(value.home_id)
    if isinstance(value, Label):
        return learner, learner.on_label(value)
    return learner, learner.on_event(value)


def get_flow(
    settings: Settings,
    source: Source[tuple[str, ReadingChunk]],
    sink: Sink[tuple[str, Any]],
    labels: Source[tuple[str, Label]] | None = None,
) -> Dataflow:
    """The whole pipeline from a source of `(home_id, ReadingChunk)` to a sink of table rows."""
    flow = Dataflow("nilm")
    chunks = op.input("readings_in", flow, source)
    # (home_id, ReadingChunk)
    validated = op.stateful_map("validate", chunks, _validate(settings))
    # (home_id, (accepted ReadingBatch, [Rejection]))
    accepted = op.map_value("accepted", validated, lambda v: v[0])
    # (home_id, ReadingBatch)
    rejected = op.flat_map("rejected", validated, lambda kv: [("rejected", r) for r in kv[1][1]])
    # ("rejected", Rejection)
    stored = op.map("readings_rows", accepted, lambda kv: ("readings", kv[1]))
    # ("readings", ReadingBatch)
    detected = op.stateful("detect", accepted, lambda resume: _DetectLogic(settings, resume))
    # (home_id, [Event])
    events = op.flat_map("events", detected, lambda kv: [(kv[0], ("event", e)) for e in kv[1]])
    # (home_id, ("event", Event))
    learner_in = events
    if labels is not None:
        confirmed = op.input("labels_in", flow, labels)
        # (home_id, Label)
        tagged = op.map("label_items", confirmed, lambda kv: (kv[0], ("label", kv[1])))
        learner_in = op.merge("learner_in", events, tagged)
    learned = op.stateful_map("learn", learner_in, _learn)
    # (home_id, [TableRow])
    rows = op.flat_map("table_rows", learned, lambda kv: kv[1])
    # (table, row)
    op.output("db", op.merge("all_rows", stored, rejected, rows), sink)
    return flow
