"""The per-home learner: recognises each event's device, learns from confirmations, flags the new.

`HomeLearner` is what the dataflow keeps in its state for each home (Bytewax pickles it into
its snapshots, so everything here pickles and is deterministic for a seed). It answers every
event and every label with rows for the DuckDB tables (`TableRow`), so the flow stays a thin
shell. Per event: signature, on/off pairing, classification by the best of several River
classifiers (prequential selection on the labels), novelty, clustering of the unexplained, and
device health; per label: learn it once and re-emit the event as confirmed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nilm.batch.features import served_features
from nilm.batch.served import ServedModel
from nilm.classification import PrequentialSelector
from nilm.clustering import UnknownClusters
from nilm.health import HealthMonitor
from nilm.novelty import NoveltyDetector
from nilm.pairing import Activation, Pairer
from nilm.records import Event, Label
from nilm.signatures import Signature, features, signature_of

__all__ = ["CLUSTER_LABEL_PREFIX", "HomeLearner", "TableRow", "event_row"]

logger = logging.getLogger(__name__)

# (table, row): the sink upserts the row by the table's key.
TableRow = tuple[str, dict[str, Any]]

# A label whose event_id is "cluster:<cluster_id>" names an unknown-device cluster: every event
# of it that the learner remembers is learned as that device.
CLUSTER_LABEL_PREFIX = "cluster:"


def event_row(
    event: Event,
    device: str | None = None,
    confidence: float | None = None,
    novelty: float | None = None,
    uncertainty: float | None = None,
    cluster_id: str | None = None,
    labelled: bool = False,
) -> TableRow:
    """The `events` row of an event and what is known of its device."""
    return (
        "events",
        {
            "event_id": event.event_id,
            "home_id": event.home_id,
            "ts": event.ts,
            "legs": event.legs,
            "delta_p_w": event.delta_p_w,
            "device": device,
            "confidence": confidence,
            "novelty": novelty,
            "uncertainty": uncertainty,
            "cluster_id": cluster_id,
            "delta_q_var": event.delta_q_var,
            "delta_s_va": event.delta_s_va,
            "delta_current_a": event.delta_current_a,
            "delta_pf": event.delta_pf,
            "p_before_w": event.p_before_w,
            "p_after_w": event.p_after_w,
            "delta_p_a_w": event.delta_p_a_w,
            "delta_p_b_w": event.delta_p_b_w,
            "voltage_v": event.voltage_v,
            "inrush_peak_w": event.inrush_peak_w,
            "ramp_s": event.ramp_s,
            "settle_slope_w_per_s": event.settle_slope_w_per_s,
            "detector": event.detector,
            "labelled": labelled,
        },
    )


@dataclass(slots=True)
class _Seen:
    """What the learner remembers of a recent event, to learn it when a label comes."""

    event: Event
    signature: Signature
    x: dict[str, float]
    device: str | None
    confidence: float
    novelty: float
    uncertainty: float
    cluster_id: str | None
    label: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> TableRow:
        if self.label is not None:
            return event_row(
                self.event, self.label, 1.0, self.novelty, 0.0, self.cluster_id, labelled=True
            )
        return event_row(
            self.event, self.device, self.confidence, self.novelty, self.uncertainty,
            self.cluster_id,
        )  # fmt: skip


class HomeLearner:
    """Keeps the models of one home; `on_event` predicts, `on_label` learns.

    Parameters
    ----------
    home_id
        The home.
    models
        Candidate classifiers (names in `nilm.classification.CLASSIFIERS`); the one with the best
        prequential macro-F1 on the labels answers.
    imbalance
        The class-imbalance strategy (`nilm.classification.IMBALANCE`).
    novelty_window_events
        HalfSpaceTrees' window, in events.
    memory_events
        How many recent events are remembered so that a label can be learned (older labels are
        logged and skipped). About two weeks of a busy home; each costs ~0.5 kB of snapshot.
    utc_offset_s
        The home's offset from UTC, for time-of-day features.
    seed
        Seeds every model.
    batch_model_path
        A batch model file (`nilm retrain`, `nilm.batch.served.save_model`); "" for none. When
        the file holds a model, it answers each event (`ServedModel.predict_proba_one` over the
        online feature dict plus `nilm.batch.features.event_features`), and the River selector
        answers whenever it cannot: no file yet, an unreadable one, or an empty answer. The file
        is looked at again every `batch_check_every` events, so a retrained model is picked up
        while the flow runs. The River models keep learning every label either way. Only a
        model on the signatures (XGBoost) can answer at event time: the networks need the
        event's window, complete only `after_s` seconds later, so a CNN or LSTM file leaves
        every answer to River here. An event the novelty detector flags still gets no device:
        novelty is judged from the labels this learner has learned, not from the file's.
    batch_check_every
        Events between two looks at `batch_model_path`.

    Examples
    --------
    >>> from datetime import UTC, datetime, timedelta
    >>> from nilm.records import Event, Label
    >>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
    >>> def ev(i, dp, legs="a"):
    ...     return Event(f"e{i}", "h", t0 + timedelta(minutes=i), legs, dp, 0.3 * dp, dp, 0.0,
    ...                  0.0, 100.0, 100.0 + dp, dp, 0.0, 120.0)
    >>> learner = HomeLearner("h", seed=0)
    >>> learner.on_event(ev(0, 500.0))[-1][1]["device"] is None
    True
    >>> _ = learner.on_label(Label(1, "h", "e0", "heater", t0))
    >>> learner.on_event(ev(1, 505.0))[-1][1]["device"]
    'heater'
    """

    def __init__(
        self,
        home_id: str,
        models: tuple[str, ...] = ("knn", "knn1", "hoeffding"),
        imbalance: str = "none",
        novelty_window_events: int = 250,
        memory_events: int = 5_000,
        utc_offset_s: int = 0,
        seed: int = 0,
        batch_model_path: str = "",
        batch_check_every: int = 100,
    ) -> None:
        self.home_id = home_id
        self.models = tuple(models)
        self.imbalance = imbalance
        self.novelty_window_events = novelty_window_events
        self.memory_events = memory_events
        self.utc_offset_s = utc_offset_s
        self.seed = seed
        self.batch_model_path = batch_model_path
        self.batch_check_every = batch_check_every
        self.served = (
            ServedModel(Path(batch_model_path), batch_check_every) if batch_model_path else None
        )
        self.classifier = PrequentialSelector(self.models, imbalance, seed)
        self.novelty = NoveltyDetector(window_events=novelty_window_events, seed=seed)
        self.clusters = UnknownClusters(home_id)
        self.pairer = Pairer()
        self.health = HealthMonitor(home_id)
        self.recent: OrderedDict[str, _Seen] = OrderedDict()
        self.last_label_id = 0
        self.n_events = 0

    def clone(self) -> HomeLearner:
        return HomeLearner(
            self.home_id, self.models, self.imbalance, self.novelty_window_events,
            self.memory_events, self.utc_offset_s, self.seed, self.batch_model_path,
            self.batch_check_every,
        )  # fmt: skip

    # -- events ------------------------------------------------------------------------------

    def on_event(self, event: Event) -> list[TableRow]:
        """Predict `event`'s device; rows for events, activations, clusters and alerts."""
        if event.event_id in self.recent:
            # At-least-once delivery: an event seen before is answered as before, not relearned.
            return [self.recent[event.event_id].row()]
        self.n_events += 1
        sig = signature_of(event, self.utc_offset_s)
        closes = self.pairer.match(event, None)
        if closes is not None:
            hours = (event.ts - closes.start_ts).total_seconds() / 3600.0
            sig = sig.with_run(hours * 3600.0, hours * (closes.power_w - event.delta_p_w) / 2.0)
        x = features(sig)
        proba = self._served_proba(event, x) or self.classifier.predict_proba_one(x)
        score = self.novelty.score_one(x)
        self.novelty.learn_one(x)
        device: str | None = None
        confidence = 0.0
        if proba:
            device = max(sorted(proba), key=lambda k: proba[k])
            confidence = proba[device]
        rows: list[TableRow] = []
        cluster_id = None
        if score.novel:
            device = None
            cluster = self.clusters.learn_one(x, event)
            cluster_id = cluster.cluster_id
            rows.append(("clusters", cluster.row()))
        uncertainty = 1.0 - confidence * (1.0 - score.novelty)
        seen = _Seen(event, sig, x, device, confidence, score.novelty, uncertainty, cluster_id)
        self._remember(seen)
        for activation in self.pairer.on_event(event, device):
            rows.append(("activations", activation.row()))
            rows += self._health(activation)
        if device is not None:
            rows += [("alerts", a.row()) for a in self.health.on_event(device, event)]
        rows.append(seen.row())
        return rows

    def _served_proba(self, event: Event, x: dict[str, float]) -> dict[str, float]:
        """The batch model's answer, or {} when there is none (River answers then)."""
        if self.served is None:
            return {}
        return self.served.predict_proba_one(served_features(event, x))

    def _health(self, activation: Activation) -> list[TableRow]:
        if activation.device is None or activation.off_event_id is None:
            return []
        return [("alerts", a.row()) for a in self.health.on_activation(activation)]

    def _remember(self, seen: _Seen) -> None:
        self.recent[seen.event.event_id] = seen
        while len(self.recent) > self.memory_events:
            self.recent.popitem(last=False)

    # -- labels ------------------------------------------------------------------------------

    def on_label(self, label: Label) -> list[TableRow]:
        """Learn a confirmation once (labels at or below the last id seen are skipped)."""
        if label.label_id <= self.last_label_id:
            logger.debug("label %s already learned; skipped", label.label_id)
            return []
        self.last_label_id = label.label_id
        if label.event_id.startswith(CLUSTER_LABEL_PREFIX):
            return self._name_cluster(label.event_id[len(CLUSTER_LABEL_PREFIX) :], label.device)
        seen = self.recent.get(label.event_id)
        if seen is None:
            logger.warning(
                "label %s names event %s, which is not among the last %s events of home %s: "
                "not learned", label.label_id, label.event_id, self.memory_events, self.home_id,
            )  # fmt: skip
            return []
        return self._learn(seen, label.device)

    def _learn(self, seen: _Seen, device: str) -> list[TableRow]:
        if seen.label == device:
            return [seen.row()]
        corrected = seen.label is not None
        seen.label = device
        if corrected:
            # A correction: River's models cannot unlearn the old device, so the classifier is
            # rebuilt from the confirmations still remembered, each with its latest device.
            self.classifier = self.classifier.clone()
            for remembered in self.recent.values():
                if remembered.label is not None:
                    self.classifier.learn_one(remembered.x, remembered.label)
        else:
            self.classifier.learn_one(seen.x, device)
        self.novelty.learn_label(seen.x, device)
        rows = [seen.row()]
        if seen.event.delta_p_w > 0:
            run = self.pairer.relabel(seen.event.event_id, device)
            if run is not None:
                rows.append(("activations", run.row()))
        return rows

    def _name_cluster(self, cluster_id: str, device: str) -> list[TableRow]:
        cluster = self.clusters.name(cluster_id, device)
        if cluster is None:
            logger.warning("no unknown-device cluster %s in home %s", cluster_id, self.home_id)
            return []
        rows: list[TableRow] = [("clusters", cluster.row())]
        for seen in list(self.recent.values()):
            if seen.cluster_id == cluster_id:
                rows += self._learn(seen, device)
        return rows

    # -- what the dashboard and eval read ----------------------------------------------------

    def uncertainty_queue(self, limit: int = 20) -> list[tuple[str, float]]:
        """Unlabelled recent events, most uncertain first: the active-learning order."""
        pending = [(s.event.event_id, s.uncertainty) for s in self.recent.values() if not s.label]
        pending.sort(key=lambda p: (-p[1], p[0]))
        return pending[:limit]
