"""Prequential comparison of batch models retrained from confirmations with online models.

The stream is a home's detected events in time order, each with its window, its features and (for
scoring) the device the ground truth says it was. A simulated user confirms some events; each
confirmation becomes available at a given time. Batch models are retrained from scratch every
`retrain_every_s` seconds of stream time on the confirmations available before that moment, and
predict every event until the next retrain; online models predict each event, then learn the
confirmations that have arrived by the next one. So no model ever sees a label from its future.
Every model is scored on the events whose device is known and that the user did not confirm (a
confirmed event shows the user's answer, as in `nilm.evaluation`), as it answered then; the
late macro-F1 counts only the events from `late_from_us` on, when most labels are in.

Time is measured only through the `clock` the caller passes (`time.perf_counter` in the
benchmark and in `nilm eval`), so this module reads no clock itself.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from nilm.batch.model import BatchClassifier, EventSamples, make_model
from nilm.records import Event, TruthEvent, to_epoch_us

__all__ = [
    "Confirmation",
    "ModelResult",
    "ModelSpec",
    "OnlineClassifier",
    "budget_confirmations",
    "compare",
    "f1_scores",
    "format_table",
    "match_truth",
]

log = logging.getLogger(__name__)
UNKNOWN = "<unknown>"


class OnlineClassifier(Protocol):
    """The River protocol the online models (and `ServedModel`) follow."""

    def learn_one(self, x: dict[str, float], device: str) -> None: ...

    def predict_proba_one(self, x: dict[str, float]) -> dict[str, float]: ...


@dataclass(frozen=True, slots=True)
class Confirmation:
    """The user said event `event_id` was `device`; models may use it from `available_us` on."""

    event_id: str
    device: str
    available_us: int


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A batch model to compare: its kind, imbalance option and constructor options."""

    kind: str
    imbalance: str = "none"
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.imbalance}"

    def build(self, seed: int) -> BatchClassifier:
        return make_model(self.kind, self.imbalance, seed=seed, **dict(self.options))


@dataclass(frozen=True, slots=True)
class ModelResult:
    """One model's figures over the stream; times are NaN when no clock was given."""

    name: str
    macro_f1: float
    per_device: dict[str, float]
    macro_f1_late: float
    scored: int
    trainings: int
    labels_used: int
    train_s_total: float
    train_s_last: float
    predict_us_per_event: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "macro_f1": self.macro_f1,
            "per_device": self.per_device,
            "macro_f1_late": self.macro_f1_late,
            "scored": self.scored,
            "trainings": self.trainings,
            "labels_used": self.labels_used,
            "train_s_total": self.train_s_total,
            "train_s_last": self.train_s_last,
            "predict_us_per_event": self.predict_us_per_event,
        }


def match_truth(
    events: Sequence[Event], truth: Sequence[TruthEvent], tolerance_s: float = 2.0
) -> list[str | None]:
    """The truth device of each event: the nearest unmatched truth event within `tolerance_s`.

    Events are matched one to one, closest pairs first; an event with no match gets None.

    >>> from datetime import UTC, datetime, timedelta
    >>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
    >>> ev = [Event(str(i), "h", t0 + timedelta(seconds=s), "a", 1.0, 0.0, 1.0, 0.0, 0.0,
    ...             0.0, 1.0, 1.0, 0.0, 120.0) for i, s in enumerate([10, 50])]
    >>> match_truth(ev, [TruthEvent(t0 + timedelta(seconds=11), "fridge", "a", "on", 1.0)])
    ['fridge', None]
    """
    ev_us = np.array([to_epoch_us(e.ts) for e in events], dtype=np.int64)
    tr_us = np.array([to_epoch_us(t.ts) for t in truth], dtype=np.int64)
    tol = int(tolerance_s * 1_000_000)
    pairs: list[tuple[int, int, int]] = []
    order = np.argsort(tr_us, kind="stable")
    sorted_us = tr_us[order]
    for i, us in enumerate(ev_us.tolist()):
        lo = int(np.searchsorted(sorted_us, us - tol, side="left"))
        hi = int(np.searchsorted(sorted_us, us + tol, side="right"))
        pairs.extend((abs(int(sorted_us[j]) - us), i, int(order[j])) for j in range(lo, hi))
    out: list[str | None] = [None] * len(events)
    used: set[int] = set()
    for _, i, j in sorted(pairs):
        if out[i] is None and j not in used:
            out[i] = truth[j].device
            used.add(j)
    return out


def budget_confirmations(
    events: Sequence[Event], devices: Sequence[str | None], budget: int, delay_s: float = 0.0
) -> list[Confirmation]:
    """A user who confirms the first `budget` events of each device, `delay_s` after each.

    >>> from datetime import UTC, datetime, timedelta
    >>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
    >>> ev = [Event(str(i), "h", t0 + timedelta(seconds=i), "a", 1.0, 0.0, 1.0, 0.0, 0.0,
    ...             0.0, 1.0, 1.0, 0.0, 120.0) for i in range(4)]
    >>> [c.event_id for c in budget_confirmations(ev, ["tv", "tv", None, "oven"], 1)]
    ['0', '3']
    """
    used: dict[str, int] = {}
    out: list[Confirmation] = []
    order = sorted(range(len(events)), key=lambda i: to_epoch_us(events[i].ts))
    for i in order:
        device = devices[i]
        if device is None or used.get(device, 0) >= budget:
            continue
        used[device] = used.get(device, 0) + 1
        available = to_epoch_us(events[i].ts) + int(delay_s * 1_000_000)
        out.append(Confirmation(events[i].event_id, device, available))
    return out


def f1_scores(
    truth: Sequence[str], predicted: Sequence[str | None]
) -> tuple[float, dict[str, float]]:
    """Macro-F1 over the devices in `truth`, and each one's F1; None predicts no device.

    >>> f1_scores(["a", "a", "b"], ["a", None, "b"])
    (0.8333333333333333, {'a': 0.6666666666666666, 'b': 1.0})
    """
    per_device: dict[str, float] = {}
    pred = [p if p is not None else UNKNOWN for p in predicted]
    for device in sorted(set(truth)):
        tp = sum(1 for t, p in zip(truth, pred, strict=True) if t == device and p == device)
        fp = sum(1 for t, p in zip(truth, pred, strict=True) if t != device and p == device)
        fn = sum(1 for t, p in zip(truth, pred, strict=True) if t == device and p != device)
        per_device[device] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    macro = float(np.mean(list(per_device.values()))) if per_device else 0.0
    return macro, per_device


def _retrain_points(
    times_us: Sequence[int], available_us: Sequence[int], every_us: int
) -> list[tuple[int, int]]:
    """(first event index served, labels used) of each retrain: on schedule, when labels grew.

    The model trained at stream time t uses the labels available strictly before t and serves
    the events from t on.
    """
    points: list[tuple[int, int]] = []
    if not times_us:
        return points
    avail = np.sort(np.asarray(available_us, dtype=np.int64))
    next_us = times_us[0]
    used = 0
    for i, t in enumerate(times_us):
        if t < next_us:
            continue
        n = int(np.searchsorted(avail, t, side="left"))
        if n > used:
            points.append((i, n))
            used = n
        next_us = next_us + every_us * max(1, (t - next_us) // every_us + 1)
    return points


def compare(
    events: Sequence[Event],
    samples: EventSamples,
    feature_dicts: Sequence[dict[str, float]],
    truth: Sequence[str | None],
    confirmations: Sequence[Confirmation],
    specs: Sequence[ModelSpec],
    online: Mapping[str, Callable[[], OnlineClassifier]] | None = None,
    retrain_every_s: float = 6 * 3600.0,
    seed: int = 0,
    clock: Callable[[], float] | None = None,
    late_from_us: int | None = None,
    fixed: Mapping[str, Sequence[str | None]] | None = None,
) -> list[ModelResult]:
    """Every model's figures over the stream (see the module docstring).

    Parameters
    ----------
    events, samples, feature_dicts, truth
        One entry per detected event, in any order: the event, its samples row, the feature
        dict the online models see, and its ground-truth device (None: not scored).
    confirmations
        The labels and when each becomes available.
    specs
        The batch models to retrain.
    online
        Factories of online models, by name, fed the same confirmations one by one.
    retrain_every_s
        How often the batch models are retrained (only when new labels have arrived).
    seed
        Seeds every model.
    clock
        Seconds from an arbitrary origin (`time.perf_counter`); None reports NaN times.
    late_from_us
        Start of the late span (µs since the epoch); None: the second half of the stream.
    fixed
        Answers already given, by name, one per event in `events` order (what the flow's
        online learner said when each event arrived), scored the same way.
    """
    n = len(events)
    if not (len(samples) == len(feature_dicts) == len(truth) == n):
        raise ValueError(
            f"one entry per event: {n} events, {len(samples)} samples, "
            f"{len(feature_dicts)} feature dicts, {len(truth)} truths"
        )
    order = sorted(range(n), key=lambda i: to_epoch_us(events[i].ts))
    times = [to_epoch_us(events[i].ts) for i in order]
    row_of = {events[i].event_id: i for i in range(n)}
    confs = sorted((c for c in confirmations if c.event_id in row_of), key=lambda c: c.available_us)
    if len(confs) < len(confirmations):
        log.warning(
            "%d confirmations name no event of the stream; ignored", len(confirmations) - len(confs)
        )
    confirmed = {c.event_id for c in confs}
    scored = [
        k
        for k, i in enumerate(order)
        if truth[i] is not None and events[i].event_id not in confirmed
    ]
    truth_scored = [str(truth[order[k]]) for k in scored]
    if late_from_us is None:
        late_from_us = (times[0] + times[-1]) // 2 if times else 0
    late = [j for j, k in enumerate(scored) if times[k] >= late_from_us]

    def score(predicted: list[str | None]) -> tuple[float, dict[str, float], float]:
        pred = [predicted[k] for k in scored]
        macro, per_device = f1_scores(truth_scored, pred)
        late_macro, _ = f1_scores([truth_scored[j] for j in late], [pred[j] for j in late])
        return macro, per_device, late_macro

    tick = clock if clock is not None else (lambda: float("nan"))
    results: list[ModelResult] = []

    points = _retrain_points(times, [c.available_us for c in confs], int(retrain_every_s * 1e6))
    for spec in specs:
        predicted: list[str | None] = [None] * n
        train_s: list[float] = []
        predict_s = 0.0
        bounds = [*points, (n, 0)]
        for (start, used), (stop, _) in itertools.pairwise(bounds):
            rows = np.array([row_of[c.event_id] for c in confs[:used]], dtype=np.int64)
            model = spec.build(seed)
            t0 = tick()
            model.fit(samples.take(rows), [c.device for c in confs[:used]])
            train_s.append(tick() - t0)
            segment = np.array(order[start:stop], dtype=np.int64)
            t0 = tick()
            labels = model.predict(samples.take(segment))
            predict_s += tick() - t0
            for k, device in zip(range(start, stop), labels, strict=True):
                predicted[k] = device
        macro, per_device, late_macro = score(predicted)
        results.append(
            ModelResult(
                spec.name,
                macro,
                per_device,
                late_macro,
                len(scored),
                len(train_s),
                points[-1][1] if points else 0,
                float(np.sum(train_s)) if train_s else 0.0,
                train_s[-1] if train_s else 0.0,
                1e6 * predict_s / max(n - (points[0][0] if points else n), 1),
            )
        )
        log.info("%s: macro-F1 %.3f over %d events", spec.name, macro, len(scored))

    for name, factory in (online or {}).items():
        model_o = factory()
        predicted = [None] * n
        learned = 0
        learn_s = 0.0
        predict_s = 0.0
        for k, i in enumerate(order):
            t0 = tick()
            while learned < len(confs) and confs[learned].available_us < times[k]:
                c = confs[learned]
                model_o.learn_one(feature_dicts[row_of[c.event_id]], c.device)
                learned += 1
            learn_s += tick() - t0
            t0 = tick()
            proba = model_o.predict_proba_one(feature_dicts[i])
            predict_s += tick() - t0
            predicted[k] = max(proba, key=lambda d: proba[d]) if proba else None
        macro, per_device, late_macro = score(predicted)
        results.append(
            ModelResult(
                name,
                macro,
                per_device,
                late_macro,
                len(scored),
                learned,
                learned,
                learn_s,
                learn_s / max(learned, 1),
                1e6 * predict_s / max(n, 1),
            )
        )
    for name, answers in (fixed or {}).items():
        if len(answers) != n:
            raise ValueError(f"{name}: {len(answers)} answers for {n} events")
        macro, per_device, late_macro = score([answers[i] for i in order])
        nan = float("nan")
        results.append(
            ModelResult(
                name,
                macro,
                per_device,
                late_macro,
                len(scored),
                0,
                len(confs),
                nan,
                nan,
                nan,
            )
        )
    return results


def format_table(results: Sequence[ModelResult], devices: Sequence[str] | None = None) -> str:
    """One text table: a row per model, macro-F1 (all, late), times, and each device's F1.

    `train s` is the total over all retrains, `last s` the last (largest) one, `pred us` the
    prediction time per event.
    """
    if not results:
        return "(no models)"
    names = list(devices) if devices is not None else sorted(results[0].per_device)
    short = [d[:8] for d in names]
    head = (
        f"{'model':<20} {'macroF1':>7} {'late':>5} {'train s':>8} {'last s':>7} {'pred us':>8} "
        + " ".join(f"{s:>8}" for s in short)
    )
    lines = [head, "-" * len(head)]
    for r in results:
        cells = " ".join(f"{r.per_device.get(d, float('nan')):>8.2f}" for d in names)
        lines.append(
            f"{r.name:<20} {r.macro_f1:>7.3f} {r.macro_f1_late:>5.3f} {r.train_s_total:>8.2f} "
            f"{r.train_s_last:>7.3f} {r.predict_us_per_event:>8.1f} {cells}"
        )
    return "\n".join(lines)
