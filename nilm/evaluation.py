"""Accuracy of the whole chain against ground truth, prequentially, with a simulated user.

`Evaluation` runs readings through the same per-home objects the dataflow keeps in its state
(`HomeEventDetector` then `HomeLearner`, in the flow's order) and plays a user who looks at the
labelling queue every `review_every_s` of readings and confirms the most uncertain events first,
at most `label_budget` per device. The `holdout` devices stand for devices the user has not
labelled yet, for novelty: never labelled by default, or, with `label_holdout_after=N`, labelled
like any other device once N of their events have been seen (as a person names an unknown
cluster, or confirms a new device's event in the queue, once it has been around for a while);
their events before that first label are the novel ones. It measures:

- events: precision, recall and F1 of detected against true switches within +/-2 s
  (`nilm.matching.match_events`);
- classification: macro-F1 and per-device F1 of the device predicted when each event arrived,
  over the events the user did not label (a labelled event shows the user's answer) and not of
  a held-out device before its first label (no answer could be right);
- novelty: ROC AUC of the novelty score, held-out devices' events before their first label
  against known devices' events (from the device's first label on, held-out devices' included),
  and the flagged fractions;
- calibration: the expected calibration error of the confidence shown with each answer;
- drift: health alerts per device, and for devices declared degraded, the delay from the onset.

Pure: readings and truth in, one dict out.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nilm.detection import HomeEventDetector
from nilm.learning import HomeLearner, TableRow
from nilm.matching import match_events
from nilm.records import Event, Label, ReadingBatch, TruthEvent, to_epoch_us

__all__ = [
    "Evaluation",
    "expected_calibration_error",
    "macro_f1",
    "prf",
    "roc_auc",
]

logger = logging.getLogger(__name__)


def prf(n_detected: int, n_truth: int, n_matched: int) -> dict[str, float]:
    """Precision, recall and F1 from counts.

    >>> prf(10, 8, 8)
    {'precision': 0.8, 'recall': 1.0, 'f1': 0.8889}
    """
    p = n_matched / n_detected if n_detected else 0.0
    r = n_matched / n_truth if n_truth else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4)}


def macro_f1(y_true: Sequence[str], y_pred: Sequence[str | None]) -> tuple[float, dict[str, float]]:
    """Macro-F1 over the true classes, and each class's F1 (a None prediction is always wrong).

    >>> macro_f1(["a", "a", "b"], ["a", None, "b"])
    (0.8333, {'a': 0.6667, 'b': 1.0})
    """
    classes = sorted(set(y_true))
    per: dict[str, float] = {}
    for c in classes:
        tp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred, strict=True) if t == c and p != c)
        per[c] = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    macro = round(sum(per.values()) / len(per), 4) if per else 0.0
    return macro, {c: round(f, 4) for c, f in per.items()}


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """The probability that a positive scores above a negative (ties count half).

    >>> roc_auc([0.9, 0.8], [0.1, 0.85])
    0.75
    """
    if not positive or not negative:
        return None
    neg = sorted(negative)
    total = 0.0
    for p in positive:
        below = bisect.bisect_left(neg, p)
        ties = bisect.bisect_right(neg, p) - below
        total += below + 0.5 * ties
    return round(total / (len(positive) * len(neg)), 4)


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10
) -> float | None:
    """Expected calibration error: the gap between confidence and accuracy, averaged over bins.

    Predictions are grouped into `n_bins` equal-width bins of confidence; each bin's
    |accuracy - mean confidence| counts by its share of the predictions (Guo et al. 2017).
    None when there are no predictions.

    Parameters
    ----------
    confidences
        The probability each prediction gave its answer, in [0, 1].
    correct
        Whether each answer was right.
    n_bins
        How many bins [0, 1] is cut into.

    Examples
    --------
    >>> expected_calibration_error([0.9, 0.9, 0.9, 0.9, 0.6], [True, True, True, False, True])
    0.2
    >>> expected_calibration_error([1.0, 1.0], [True, False])
    0.5

    References
    ----------
    Guo, C., Pleiss, G., Sun, Y. and Weinberger, K. Q. (2017). On calibration of modern neural
    networks. ICML 2017.
    """
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} outcomes")
    if not confidences:
        return None
    bins: dict[int, list[tuple[float, bool]]] = {}
    for c, ok in zip(confidences, correct, strict=True):
        c = min(max(float(c), 0.0), 1.0)
        bins.setdefault(min(int(c * n_bins), n_bins - 1), []).append((c, ok))
    total = 0.0
    for members in bins.values():
        mean_conf = sum(c for c, _ in members) / len(members)
        accuracy = sum(1 for _, ok in members if ok) / len(members)
        total += len(members) * abs(accuracy - mean_conf)
    return round(total / len(confidences), 4)


@dataclass(slots=True)
class _Scored:
    event: Event
    device: str | None
    novelty: float
    uncertainty: float
    truth_device: str | None = None
    labelled: bool = False
    confidence: float = 0.0


@dataclass(slots=True)
class _User:
    """The simulated user: confirms the most uncertain pending events, within a budget.

    A held-out device is left alone until `label_holdout_after` of its events have been `seen`
    (forever when None).
    """

    budget: int
    holdout: frozenset[str]
    per_review: int
    label_holdout_after: int | None = None
    seen: Counter[str] = field(default_factory=Counter)
    spent: Counter[str] = field(default_factory=Counter)
    next_label_id: int = 1
    first_label: dict[str, datetime] = field(default_factory=dict)

    def review(self, pending: list[_Scored], learner: HomeLearner, now: datetime) -> list[TableRow]:
        rows: list[TableRow] = []
        done = 0
        for s in sorted(pending, key=lambda s: (-s.uncertainty, s.event.ts)):
            d = s.truth_device
            if done >= self.per_review:
                break
            if d is None or not self.may_label(d) or self.spent[d] >= self.budget:
                continue
            label = Label(self.next_label_id, s.event.home_id, s.event.event_id, d, now)
            self.next_label_id += 1
            self.spent[d] += 1
            self.first_label.setdefault(d, now)
            s.labelled = True
            done += 1
            rows += learner.on_label(label)
        return rows

    def may_label(self, device: str) -> bool:
        if device not in self.holdout:
            return True
        after = self.label_holdout_after
        return after is not None and self.seen[device] >= after


class Evaluation:
    """Runs readings and truth through the detector and the learner with a simulated user.

    Parameters
    ----------
    truth
        The true switches of the readings.
    label_budget
        Confirmations per device the user gives at most.
    holdout
        Devices the user has not labelled yet (novelty is measured on them). None: those that
        first switch after the first third of the truth's span (a device that arrived later).
    label_holdout_after
        The user labels a held-out device, as any other, once this many of its events have been
        detected (it shows in the queue, or as an unknown cluster, for a while); None: never,
        so none of its energy is ever correctly assigned.
    degraded
        Devices known to degrade, and when they start to: their first alert after the onset
        gives the detection delay; alerts on other devices count as false alarms.
    learner_factory, detector_factory
        Make the per-home objects (defaults: `HomeLearner(home_id)`, `HomeEventDetector`).
    review_every_s
        How often the user looks at the queue, in seconds of readings.
    per_review
        Confirmations per look at most.
    repredict_at_end
        Re-predict the stored events (`HomeLearner.repredict_pending`) once, when the figures
        are asked for, rather than after every label as the flow does for a household looking
        at its history: the same final answers for the events the learner remembers, at the
        cost of one pass over its memory instead of one per label. Event-time answers, which
        the classification figures score, are not re-predictions either way.

    Examples
    --------
    >>> from nilm.simulator import HouseholdSimulator, SimulatorConfig
    >>> sim = HouseholdSimulator(SimulatorConfig(seed=5))
    >>> batch, truth = sim.run(0.25)
    >>> ev = Evaluation(truth, label_budget=5)
    >>> ev.feed(batch)
    >>> result = ev.result()
    >>> result["events"]["recall"] > 0.9, sorted(result)
    (True, ['calibration', 'classification', 'drift', 'events', 'labels', 'novelty'])
    """

    def __init__(
        self,
        truth: Sequence[TruthEvent],
        label_budget: int = 10,
        holdout: Iterable[str] | None = None,
        degraded: dict[str, datetime] | None = None,
        learner_factory: Callable[[str], HomeLearner] | None = None,
        detector_factory: Callable[[str], HomeEventDetector] | None = None,
        review_every_s: float = 3600.0,
        per_review: int = 10,
        tolerance_s: float = 2.0,
        min_w: float = 50.0,
        repredict_at_end: bool = True,
        label_holdout_after: int | None = None,
    ) -> None:
        self.truth = sorted(truth, key=lambda t: t.ts)
        self.label_budget = label_budget
        self.holdout = frozenset(holdout) if holdout is not None else _late_devices(self.truth)
        self.degraded = dict(degraded or {})
        self.learner_factory = learner_factory or HomeLearner
        self.detector_factory = detector_factory or HomeEventDetector
        self.review_every_s = review_every_s
        self.tolerance_s = tolerance_s
        self.min_w = min_w
        self.repredict_at_end = repredict_at_end
        self.user = _User(label_budget, self.holdout, per_review, label_holdout_after)
        self.detectors: dict[str, HomeEventDetector] = {}
        self.learners: dict[str, HomeLearner] = {}
        self.scored: list[_Scored] = []
        self.alerts: list[dict[str, Any]] = []
        # The latest row of each activation (runs are updated as labels arrive): energy per device.
        self.activations: dict[str, dict[str, Any]] = {}
        self._pending: list[_Scored] = []
        self._last_review: datetime | None = None
        self._truth_us = [to_epoch_us(t.ts) for t in self.truth]
        self._claimed: set[int] = set()

    # -- running ---------------------------------------------------------------------------

    def feed(self, batch: ReadingBatch) -> None:
        """Run one batch of readings (of one home) through detection, learning and the user."""
        home = batch.home_id
        if home not in self.detectors:
            self.detectors[home] = self.detector_factory(home)
            self.learners[home] = self._new_learner(home)
        for event in self.detectors[home].update(batch):
            self.feed_event(event)

    def feed_event(self, event: Event) -> None:
        """One detected event: predict, maybe let the user review the queue."""
        learner = self.learners.get(event.home_id)
        if learner is None:
            learner = self.learners[event.home_id] = self._new_learner(event.home_id)
        if self._last_review is None:
            self._last_review = event.ts
        if (event.ts - self._last_review).total_seconds() >= self.review_every_s:
            self._collect(self.user.review(self._pending, learner, event.ts))
            self._pending = []
            self._last_review = event.ts
        rows = learner.on_event(event)
        self._collect(rows)
        row = next(
            r for t, r in reversed(rows) if t == "events" and r["event_id"] == event.event_id
        )
        scored = _Scored(
            event, row["device"], row["novelty"] or 0.0, row["uncertainty"] or 0.0,
            self._truth_device(event), confidence=row["confidence"] or 0.0,
        )  # fmt: skip
        if scored.truth_device is not None:
            self.user.seen[scored.truth_device] += 1
        self.scored.append(scored)
        self._pending.append(scored)

    def _new_learner(self, home_id: str) -> HomeLearner:
        learner = self.learner_factory(home_id)
        if self.repredict_at_end:
            learner.repredict_per_step = 0
        return learner

    def _collect(self, rows: list[TableRow]) -> None:
        self.alerts += [r for t, r in rows if t == "alerts"]
        self.activations.update((r["activation_id"], r) for t, r in rows if t == "activations")

    def _truth_device(self, event: Event) -> str | None:
        """The device of the nearest unclaimed true switch within tolerance on a leg of the
        event's (for the user): a freezer's step on leg a in the second a vacuum starts on leg
        b is no vacuum's, and taking it for one would teach the learner the freezer as the
        vacuum."""
        u = to_epoch_us(event.ts)
        tol = int(self.tolerance_s * 1_000_000)
        lo = bisect.bisect_left(self._truth_us, u - tol)
        hi = bisect.bisect_right(self._truth_us, u + tol)
        best: tuple[int, int] | None = None
        for k in range(lo, hi):
            t = self.truth[k]
            if k in self._claimed or abs(t.delta_p_w) < self.min_w:
                continue
            if not set(t.legs) & set(event.legs):
                continue
            if (t.delta_p_w > 0) == (event.delta_p_w > 0):
                d = abs(self._truth_us[k] - u)
                if best is None or d < best[0]:
                    best = (d, k)
        if best is None:
            return None
        self._claimed.add(best[1])
        return self.truth[best[1]].device

    # -- results ---------------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        """The figures, as one JSON-ready dict."""
        if self.repredict_at_end:
            for learner in self.learners.values():
                self._collect(learner.repredict_pending())
        events = [s.event for s in self.scored]
        span_end = self.scored[-1].event.ts if self.scored else None
        truth = [t for t in self.truth if span_end is None or t.ts <= span_end]
        matching = match_events(events, truth, self.tolerance_s, self.min_w)
        y_true: list[str] = []
        y_pred: list[str | None] = []
        pos: list[float] = []
        neg: list[float] = []
        first10: dict[str, list[bool]] = {}
        known_flags: list[bool] = []
        confidences: list[float] = []
        correct: list[bool] = []
        for s in self.scored:
            d = s.truth_device
            if d is None:
                continue
            if s.device is not None and not s.labelled:
                # Every answer shown with its confidence, held-out devices' events included:
                # a confident answer for a device the user never taught is a miscalibrated one.
                confidences.append(s.confidence)
                correct.append(s.device == d)
            flagged = s.device is None and s.novelty >= 0.5
            first = self.user.first_label.get(d)
            if d in self.holdout and (first is None or s.event.ts < first):
                pos.append(s.novelty)
                seen = first10.setdefault(d, [])
                if len(seen) < 10:
                    seen.append(flagged)
                continue
            if first is not None and s.event.ts > first:
                neg.append(s.novelty)
                known_flags.append(flagged)
            if not s.labelled:
                y_true.append(d)
                y_pred.append(s.device)
        macro, per = macro_f1(y_true, y_pred)
        return {
            "events": {
                "precision": round(matching.precision, 4),
                "recall": round(matching.recall, 4),
                "f1": round(matching.f1, 4),
            },
            "classification": {"macro_f1": macro, "per_device": per, "n_scored": len(y_true)},
            "novelty": {
                "roc_auc": roc_auc(pos, neg),
                "holdout": sorted(self.holdout),
                "label_holdout_after": self.user.label_holdout_after,
                "holdout_first10_flagged": {
                    d: round(sum(v) / len(v), 4) for d, v in sorted(first10.items())
                },
                "known_flagged_rate": (
                    round(sum(known_flags) / len(known_flags), 4) if known_flags else None
                ),
            },
            "calibration": {
                "ece": expected_calibration_error(confidences, correct),
                "n_predictions": len(confidences),
                "mean_confidence": (
                    round(sum(confidences) / len(confidences), 4) if confidences else None
                ),
                "accuracy": round(sum(correct) / len(correct), 4) if correct else None,
            },
            "drift": self._drift(),
            "labels": dict(sorted(self.user.spent.items())),
        }

    def _drift(self) -> dict[str, Any]:
        by_device = Counter(a["device"] for a in self.alerts)
        out: dict[str, Any] = {
            "alerts": len(self.alerts),
            "by_device": dict(sorted(by_device.items())),
            "false_alarms": sum(n for d, n in by_device.items() if d not in self.degraded),
        }
        delays: dict[str, float | None] = {}
        for device, onset in sorted(self.degraded.items()):
            after = [a for a in self.alerts if a["device"] == device and a["ts"] >= onset]
            first = min((a["ts"] for a in after), default=None)
            delays[device] = (
                None if first is None else round((first - onset).total_seconds() / 3600.0, 2)
            )
            out.setdefault("first_alert", {})[device] = next(
                (a["message"] for a in after if a["ts"] == first), None
            )
        out["delay_h"] = delays
        out["messages"] = [a["message"] for a in self.alerts[:20]]
        return out


def _late_devices(truth: Sequence[TruthEvent], fraction: float = 1 / 3) -> frozenset[str]:
    """Devices that first switch after `fraction` of the truth's span."""
    if not truth:
        return frozenset()
    t0, t1 = truth[0].ts, truth[-1].ts
    cut = t0 + (t1 - t0) * fraction
    first: dict[str, datetime] = {}
    for t in truth:
        first.setdefault(t.device, t.ts)
    return frozenset(d for d, ts in first.items() if ts > cut)
