"""The dataflow: readings → validation → per-home event detection → learning → DuckDB.

Every stateful step keeps an object from `nilm/` per home, so Bytewax recovery snapshots the
validator's clock, the detectors and the models together with the sources' positions.
Steps are keyed by home: a 240 V load steps both legs at once, so a home's legs meet in one
detector, and homes spread across workers and processes by key.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulLogic
from bytewax.outputs import FixedPartitionedSink, Sink

from flows.sink import home_of
from nilm.batch.windows import PairedWindower, window_row
from nilm.detection import HomeEventDetector
from nilm.learning import HomeLearner, TableRow
from nilm.provisional import SETTLE_TABLE, Settlement
from nilm.records import Event, Label, ReadingBatch, ReadingChunk, Rejection
from nilm.settings import Settings
from nilm.validation import ReadingValidator, ValidationLimits

__all__ = ["get_flow"]

Validated = tuple[ReadingBatch, list[Rejection]]
LearnerInput = tuple[str, Event | Label | Settlement]
# ("readings", home_id, ReadingBatch) | ("events", home_id, the final events of one batch)
WindowsInput = tuple[str, str, Any]


logger = logging.getLogger(__name__)

S = TypeVar("S")
V = TypeVar("V")
W = TypeVar("W")


class ObjectStep(StatefulLogic[V, W, bytes], Generic[S, V, W]):
    """One `nilm/` object per key: built on the key's first item, snapshotted as pickle bytes.

    Bytewax's `stateful_map` deep-copies its state at every snapshot; for a home's models that
    took about a second, pickling takes a fraction of it, and bytes cannot be torn by the
    object changing after the snapshot was taken.
    """

    def __init__(
        self,
        resume: bytes | None,
        build: Callable[[V], S],
        step: Callable[[S, V], W],
        flush: Callable[[S], W] | None = None,
        name: str = "",
        recovery_dir: str = "",
    ) -> None:
        self.state: S | None = _restored(resume, name, recovery_dir)
        self.build = build
        self.step = step
        self.flush = flush

    def on_item(self, value: V) -> tuple[Iterable[W], bool]:
        if self.state is None:
            self.state = self.build(value)
        return [self.step(self.state, value)], StatefulLogic.RETAIN

    def on_eof(self) -> tuple[Iterable[W], bool]:
        if self.flush is None or self.state is None:
            return [], StatefulLogic.RETAIN
        return [self.flush(self.state)], StatefulLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


# Steps whose unreadable snapshot has been reported: once per step and process, not per home.
_REPORTED_UNREADABLE: set[str] = set()


def _restored(resume: bytes | None, name: str, recovery_dir: str) -> Any:
    """The state a snapshot holds, or None (built afresh) when it cannot be read.

    A snapshot written by an older version may name classes or attributes that are gone; the
    flow must not stop on it, nor say so for every home and every restart of a worker.
    """
    if resume is None:
        return None
    try:
        return pickle.loads(resume)
    except Exception as err:  # any unpickling error: the state is as good as absent
        if name not in _REPORTED_UNREADABLE:
            _REPORTED_UNREADABLE.add(name)
            logger.warning(
                "the %s step's snapshot in the recovery folder %s cannot be read (%s: %s), "
                "most likely written by an older version of nilm: starting its %s afresh. "
                "Nothing is lost from the database%s; nothing to do (the next snapshot replaces "
                "it), or run the older version to keep the old state.",
                name or "stateful", recovery_dir or "(none given)", type(err).__name__, err,
                _AFRESH.get(name, "state"), _LOST.get(name, ""),
            )  # fmt: skip
        else:
            logger.debug("%s: another unreadable snapshot, started afresh", name, exc_info=True)
        return None


_AFRESH = {"learn": "learner (models, clusters, device health)", "detect": "event detector",
           "validate": "reading validator", "windows": "event windows"}  # fmt: skip
_LOST = {"learn": "; the models relearn from the labels confirmed from now on"}


def _validate(validator: ReadingValidator, chunk: ReadingChunk) -> Validated:
    accepted, rejected = validator.validate(chunk.batch, chunk.source)
    return accepted, [*chunk.rejections, *rejected]


def _learn(learner: HomeLearner, item: LearnerInput) -> list[TableRow]:
    _kind, value = item
    if isinstance(value, Label):
        return learner.on_label(value)
    if isinstance(value, Settlement):
        # after the rows of the events it settles, so the sink sees those first
        return [(SETTLE_TABLE, value.row())]
    return learner.on_event(value)


def _finals(answer: list[Event | Settlement]) -> list[Event]:
    return [e for e in answer if isinstance(e, Event) and not e.provisional]


def _tagged(answer: list[Event | Settlement]) -> list[tuple[str, Event | Settlement]]:
    return [("settle" if isinstance(e, Settlement) else "event", e) for e in answer]


def _with_stored_labels(
    tagged: list[tuple[str, Event | Settlement]], after_event: Mapping[str, Sequence[Label]]
) -> list[tuple[str, Event | Settlement | Label]]:
    out: list[tuple[str, Event | Settlement | Label]] = []
    for kind, value in tagged:
        out.append((kind, value))
        if kind == "event":
            out += [("label", label) for label in after_event.get(value.event_id, ())]
    return out


def _window(windower: PairedWindower, item: WindowsInput) -> list[TableRow]:
    kind, _home, value = item
    windows = windower.on_readings(value) if kind == "readings" else windower.on_events(value)
    return [window_row(w) for w in windows]


def _flush_windows(windower: PairedWindower) -> list[TableRow]:
    return [window_row(w) for w in windower.flush()]


def get_flow(
    settings: Settings,
    source: Source[tuple[str, ReadingChunk]],
    sink: Sink[tuple[str, Any]],
    labels: Source[tuple[str, Label]] | None = None,
    stored_labels: Mapping[str, Sequence[Label]] | None = None,
) -> Dataflow:
    """The whole pipeline from a source of `(home_id, ReadingChunk)` to a sink of table rows.

    `stored_labels` (by event id) are handed to the learner right after their event, in stream
    order: a flow that regenerates stored events (a replay) relearns their labels as it goes.
    """
    after_event = stored_labels or {}
    recovery = str(settings.recovery_dir)
    flow = Dataflow("nilm")
    chunks = op.input("readings_in", flow, source)
    # (home_id, ReadingChunk)
    limits = ValidationLimits(voltage_v=(settings.voltage_min_v, settings.voltage_max_v))
    validated = op.stateful(
        "validate",
        chunks,
        lambda resume: ObjectStep(
            resume, lambda _: ReadingValidator(limits), _validate, None, "validate", recovery
        ),
    )
    # (home_id, (accepted ReadingBatch, [Rejection]))
    accepted = op.map_value("accepted", validated, lambda v: v[0])
    # (home_id, ReadingBatch)
    rejected = op.flat_map("rejected", validated, lambda kv: [("rejected", r) for r in kv[1][1]])
    # ("rejected", Rejection)
    stored = op.map("readings_rows", accepted, lambda kv: ("readings", kv[1]))
    # ("readings", ReadingBatch)
    detected = op.stateful(
        "detect",
        accepted,
        lambda resume: ObjectStep(
            resume,
            lambda batch: HomeEventDetector(
                batch.home_id,
                min_event_w=settings.min_event_w,
                detector=settings.detector,
                provisional=settings.provisional_events,
            ),
            HomeEventDetector.update_live,
            HomeEventDetector.flush_live,
            "detect",
            recovery,
        ),
    )
    # (home_id, [final Event, then provisional Event, then Settlement])
    events = op.flat_map(
        "events",
        detected,
        lambda kv: [(kv[0], t) for t in _with_stored_labels(_tagged(kv[1]), after_event)],
    )
    # (home_id, ("event", Event) | ("settle", Settlement) | ("label", Label)): a stored label
    # right after its event
    learner_in = events
    if labels is not None:
        confirmed = op.input("labels_in", flow, labels)
        # (home_id, Label)
        tagged = op.map("label_items", confirmed, lambda kv: (kv[0], ("label", kv[1])))
        learner_in = op.merge("learner_in", events, tagged)
    learned = op.stateful(
        "learn",
        learner_in,
        lambda resume: ObjectStep(
            resume,
            lambda item: HomeLearner(
                item[1].home_id,
                utc_offset_s=settings.home(item[1].home_id).utc_offset_s,
                batch_model_path=settings.model_path(item[1].home_id),
            ),
            _learn,
            None,
            "learn",
            recovery,
        ),
    )
    # (home_id, [TableRow])
    rows = op.flat_map("table_rows", learned, lambda kv: kv[1])
    # (table, row)
    windows_in = op.merge(
        "windows_in",
        op.map("window_readings", accepted, lambda kv: (kv[0], ("readings", kv[0], kv[1]))),
        op.map("window_events", detected, lambda kv: (kv[0], ("events", kv[0], _finals(kv[1])))),
    )
    # (home_id, ("readings" | "events", home_id, ReadingBatch | [Event]))
    windowed = op.stateful(
        "windows",
        windows_in,
        lambda resume: ObjectStep(
            resume,
            lambda item: PairedWindower(item[1]),
            _window,
            _flush_windows,
            "windows",
            recovery,
        ),
    )
    # (home_id, [("event_windows", row)])
    window_rows = op.flat_map("window_rows", windowed, lambda kv: kv[1])
    # ("event_windows", row)
    all_rows = op.merge("all_rows", stored, rejected, rows, window_rows)
    # (table, row)
    if isinstance(sink, FixedPartitionedSink):
        # Rows travel to the sink partition that owns their home's database file.
        all_rows = op.map("by_home", all_rows, lambda item: (home_of(item), item))
        # (home_id, (table, row))
    op.output("db", all_rows, sink)
    return flow
