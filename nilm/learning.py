"""The per-home learner: recognises each event's device, learns from confirmations, flags the new.

`HomeLearner` is what the dataflow keeps in its state for each home (Bytewax pickles it into
its snapshots, so everything here pickles and is deterministic for a seed). It answers every
event and every label with rows for the DuckDB tables (`TableRow`), so the flow stays a thin
shell. Per event: signature, on/off pairing, classification (by default the calibrated kernel
nearest-neighbour; given several candidates, the best by prequential selection on the labels),
novelty, clustering of the unexplained, and device health; per label: learn it once and re-emit
the event as confirmed.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nilm.batch.features import served_features
from nilm.batch.served import ServedModel
from nilm.classification import KernelClassifier, PrequentialSelector, weighted
from nilm.clustering import UnknownClusters
from nilm.health import HealthMonitor
from nilm.novelty import NoveltyDetector, NoveltyScore
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
# How many provisional event ids (and labels waiting for them) a learner keeps in mind.
_PROVISIONAL_MEMORY = 256


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
            "provisional": event.provisional,
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
    # The on event of the run this off event closes, when pairing matched one.
    closes: str | None = None
    # The devices running on its legs when it happened (`HomeLearner._context`).
    context: frozenset[str] = frozenset()

    def row(self) -> TableRow:
        if self.label is not None:
            return event_row(
                self.event, self.label, 1.0, self.novelty, 0.0, self.cluster_id, labelled=True
            )
        return event_row(
            self.event, self.device, self.confidence, self.novelty, self.uncertainty,
            self.cluster_id,
        )  # fmt: skip


def _context_of(seen: _Seen) -> frozenset[str]:
    # events remembered by a snapshot from before context have none
    return getattr(seen, "context", frozenset())


class HomeLearner:
    """Keeps the models of one home; `on_event` predicts, `on_label` learns.

    Parameters
    ----------
    home_id
        The home.
    models
        Candidate classifiers (names in `nilm.classification.CLASSIFIERS`); the one with the best
        prequential macro-F1 on the labels answers. The default is the calibrated kernel
        nearest-neighbour alone: prequential selection over a few dozen labels, which the user
        gives to the hardest events first, is mostly noise, and it let a Hoeffding tree with
        naive-Bayes leaves answer with a device labelled once (ANTgen h1: a fridge taken for a
        PC on the other leg, macro-F1 0.72 against 0.81 with the kernel alone).
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
    context_window_s
        How long a run that is still open counts as running for the context (0: no context).
        Off by default: measured with 3 h (10 labels per device), it changed macro-F1 by at
        most +0.003 on the simulator's seeds and ANTgen h1-h5, and lost 0.027 on h6 and 0.007
        on h8, the households nobody tunes on; the boosts a few dozen labels fit are noisy.
    repredict_per_step
        After a label or a named cluster, the remembered events are answered again with the
        updated model, newest first, at most this many per call of `on_event` or `on_label`
        (bounded work per step); each answer that changes is emitted as an updated `events` row,
        and the activations it belongs to follow. Confirmed events keep their label.

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
        models: tuple[str, ...] = ("kernel",),
        imbalance: str = "none",
        novelty_window_events: int = 250,
        memory_events: int = 5_000,
        utc_offset_s: int = 0,
        seed: int = 0,
        batch_model_path: str = "",
        batch_check_every: int = 100,
        repredict_per_step: int = 300,
        context_window_s: float = 0.0,
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
        self.repredict_per_step = repredict_per_step
        self.context_window_s = context_window_s
        self.served = (
            ServedModel(Path(batch_model_path), batch_check_every) if batch_model_path else None
        )
        self.classifier = PrequentialSelector(self.models, imbalance, seed)
        # The selector's answer is shown with this model's probability of it: calibrated on the
        # home's own labels, where a 1-nearest-neighbour would show 100 % on everything.
        self.calibration = KernelClassifier()
        self.novelty = NoveltyDetector(window_events=novelty_window_events, seed=seed)
        self.clusters = UnknownClusters(home_id)
        self.pairer = Pairer()
        self.health = HealthMonitor(home_id)
        self.recent: OrderedDict[str, _Seen] = OrderedDict()
        # The activations of the remembered events, so that a re-prediction can rewrite them, and
        # which activation each on or off event belongs to.
        self.activations: OrderedDict[str, Activation] = OrderedDict()
        self.activation_of: dict[str, str] = {}
        # Events to answer again with the model as it is now, newest first (see `_catch_up`).
        self.stale: list[str] = []
        # The labelled events among `recent`, in the order their labels came.
        self.label_order: list[str] = []
        self.last_label_id = 0
        self.n_events = 0
        # Provisional events answered lately, and labels that came for one of them: a label is
        # learned when its event is final (see `_provisional_rows`).
        self.provisional_ids: OrderedDict[str, None] = OrderedDict()
        self.parked_labels: OrderedDict[str, Label] = OrderedDict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # snapshots from before provisional events lack these; a restart must not fail on them
        self.__dict__.setdefault("provisional_ids", OrderedDict())
        self.__dict__.setdefault("parked_labels", OrderedDict())
        # nor have these older ones history re-prediction and calibration
        self.__dict__.setdefault("repredict_per_step", 300)
        self.__dict__.setdefault("calibration", KernelClassifier())
        self.__dict__.setdefault("activations", OrderedDict())
        self.__dict__.setdefault("activation_of", {})
        self.__dict__.setdefault("stale", [])
        self.__dict__.setdefault("label_order", [])
        self.__dict__.setdefault("context_window_s", 0.0)

    def clone(self) -> HomeLearner:
        return HomeLearner(
            self.home_id, self.models, self.imbalance, self.novelty_window_events,
            self.memory_events, self.utc_offset_s, self.seed, self.batch_model_path,
            self.batch_check_every, self.repredict_per_step, self.context_window_s,
        )  # fmt: skip

    # -- events ------------------------------------------------------------------------------

    def on_event(self, event: Event) -> list[TableRow]:
        """Predict `event`'s device; rows for events, activations, clusters and alerts."""
        if event.provisional:
            return self._provisional_rows(event)
        parked = self.parked_labels.pop(event.event_id, None)
        if parked is not None:
            answer = self.on_event(event)
            seen_now = self.recent.get(event.event_id)
            return answer + (self._learn(seen_now, parked.device) if seen_now is not None else [])
        if event.event_id in self.recent:
            # At-least-once delivery: an event seen before is answered as before, not relearned.
            return [self.recent[event.event_id].row()]
        self.n_events += 1
        sig, x, closes_id = self._features(event)
        context = self._context(event)
        device, confidence, score = self._answer(event, x, closes_id, context)
        self.novelty.learn_one(x)
        rows: list[TableRow] = []
        cluster_id = None
        if device is None and score.novel:
            cluster = self.clusters.learn_one(x, event)
            cluster_id = cluster.cluster_id
            rows.append(("clusters", cluster.row()))
        uncertainty = 1.0 - confidence * (1.0 - score.novelty)
        seen = _Seen(event, sig, x, device, confidence, score.novelty, uncertainty, cluster_id)
        seen.closes = closes_id
        seen.context = context
        self._remember(seen)
        for activation in self.pairer.on_event(event, device):
            self._keep_activation(activation)
            rows.append(("activations", activation.row()))
            rows += self._health(activation)
        if device is not None:
            rows += [("alerts", a.row()) for a in self.health.on_event(device, event)]
        rows.append(seen.row())
        # Older events answered again come first: the event's own row stays the last one.
        return self._catch_up() + rows

    def _answer(
        self,
        event: Event,
        x: dict[str, float],
        closes: str | None = None,
        context: frozenset[str] = frozenset(),
    ) -> tuple[str | None, float, NoveltyScore]:
        """The device the models see in `x` now (None when none or novel), its calibrated
        confidence and the novelty score; changes nothing.

        The devices running on the event's legs (`context`) are favoured by the boost the
        calibration fitted on the labels: a step while the washer runs is most likely the
        washer's, as far as this home's labels bear that out. An off event the models cannot
        place, which closes a run of a known device, is that device (an off event knows its
        on), as sure as the run's on event is.
        """
        proba = self._served_proba(event, x) or self.classifier.predict_proba_one(x)
        proba = self._in_context(proba, context, x)
        score = self.novelty.score_one(x)
        device: str | None = None
        confidence = 0.0
        if proba:
            device = max(sorted(proba), key=lambda k: proba[k])
            confidence = self._confidence(device, x, proba, context)
        if score.novel:
            device = None
        if device is None and closes is not None:
            on = self.recent.get(closes)
            run_device = self._device_of(closes)
            if on is not None and run_device is not None:
                device = run_device
                if on.label is not None:
                    confidence = 1.0
                else:
                    calibrated = self.calibration.predict_proba_one(weighted(on.x))
                    confidence = calibrated.get(run_device, on.confidence)
        return device, confidence, score

    def _device_of(self, event_id: str) -> str | None:
        seen = self.recent.get(event_id)
        if seen is None:
            return None
        return seen.label if seen.label is not None else seen.device

    def _keep_activation(self, activation: Activation) -> None:
        self.activations[activation.activation_id] = activation
        self.activations.move_to_end(activation.activation_id)
        self.activation_of[activation.on_event_id] = activation.activation_id
        if activation.off_event_id is not None:
            self.activation_of[activation.off_event_id] = activation.activation_id
        while len(self.activations) > self.memory_events:
            _, gone = self.activations.popitem(last=False)
            self.activation_of.pop(gone.on_event_id, None)
            if gone.off_event_id is not None:
                self.activation_of.pop(gone.off_event_id, None)

    def _run_device(self, activation: Activation) -> str | None:
        """Who a run belongs to: a confirmed end's device first (the on event's before the
        off's), then the on event's answer, then the off event's."""
        ends = [self.recent.get(activation.on_event_id)]
        if activation.off_event_id is not None:
            ends.append(self.recent.get(activation.off_event_id))
        seen = [e for e in ends if e is not None]
        for e in seen:
            if e.label is not None:
                return e.label
        return next((e.device for e in seen if e.device is not None), None)

    def _refresh_activation(self, event_id: str) -> list[TableRow]:
        """The activation of `event_id` again, if its device changed."""
        activation = self.activations.get(self.activation_of.get(event_id, ""))
        if activation is None:
            return []
        device = self._run_device(activation)
        if device is None or device == activation.device:
            return []
        updated = replace(activation, device=device)
        self._keep_activation(updated)
        if updated.off_event_id is None and not updated.abandoned:
            self.pairer.relabel(updated.on_event_id, device)
        return [("activations", updated.row())]

    def _mark_stale(self) -> None:
        """The model changed: every remembered unconfirmed event is to be answered again."""
        self.stale = [k for k, s in reversed(self.recent.items()) if s.label is None]

    def _catch_up(self) -> list[TableRow]:
        """Answer again up to `repredict_per_step` stale events, newest first."""
        rows: list[TableRow] = []
        todo, self.stale = (
            self.stale[: self.repredict_per_step],
            self.stale[self.repredict_per_step :],
        )
        for event_id in todo:
            rows += self._reanswer(event_id)
            # Newest first reaches an off event before its on: once the on event has its answer,
            # its off event is answered again (it may take the run's device).
            run = self.activations.get(self.activation_of.get(event_id, ""))
            if run is not None and run.on_event_id == event_id and run.off_event_id is not None:
                rows += self._reanswer(run.off_event_id)
        return rows

    def repredict_pending(self) -> list[TableRow]:
        """Answer again, at once, every event still waiting to be re-predicted.

        What `repredict_per_step` spreads over the steps after a label, done in one go: for a
        run where nobody looks at the history until it ends (`nilm eval` sets
        `repredict_per_step` to 0 and calls this at the end: every label re-marks the whole
        memory, so re-predicting after each cost a pass over it per label).
        """
        saved = self.repredict_per_step
        self.repredict_per_step = max(len(self.stale), 1)
        try:
            return self._catch_up()
        finally:
            self.repredict_per_step = saved

    def _reanswer(self, event_id: str) -> list[TableRow]:
        seen = self.recent.get(event_id)
        if seen is None or seen.label is not None:
            return []
        device, confidence, score = self._answer(
            seen.event, seen.x, seen.closes, getattr(seen, "context", frozenset())
        )
        before = seen.row()
        seen.device, seen.confidence, seen.novelty = device, confidence, score.novelty
        seen.uncertainty = 1.0 - confidence * (1.0 - score.novelty)
        after = seen.row()
        rows = [after] if after != before else []
        return rows + self._refresh_activation(event_id)

    def _confidence(
        self,
        device: str,
        x: dict[str, float],
        proba: dict[str, float],
        context: frozenset[str] = frozenset(),
    ) -> float:
        """The calibrated probability that `device` is right (the answering model's own figure
        for a device the calibration has not learned, as a served model's may be)."""
        calibrated = self.calibration.predict_proba_one(weighted(x), context)
        return calibrated.get(device, proba[device]) if calibrated else proba[device]

    def _in_context(
        self, proba: dict[str, float], context: frozenset[str], x: dict[str, float]
    ) -> dict[str, float]:
        """`proba` with the running devices favoured by the calibration's fitted boost."""
        boost = self.calibration.context_boost(x)
        if not proba or not context or boost == 1.0:
            return proba
        raised = {d: p * (boost if d in context else 1.0) for d, p in proba.items()}
        total = sum(raised.values())
        return {d: p / total for d, p in raised.items()} if total > 0 else proba

    def _context(self, event: Event) -> frozenset[str]:
        """The devices of the runs open on `event`'s legs (either leg of a 240 V one) that
        started within `context_window_s`; changes nothing."""
        if self.context_window_s <= 0:
            return frozenset()
        legs = set(event.legs)
        running = set()
        for run_legs, runs in self.pairer.open.items():
            if not legs & set(run_legs):
                continue
            for run in runs:
                age = (event.ts - run.start_ts).total_seconds()
                if run.device is not None and 0 <= age <= self.context_window_s:
                    running.add(run.device)
        return frozenset(running)

    def _features(self, event: Event) -> tuple[Signature, dict[str, float], str | None]:
        """The event's signature and features, with its run's length and energy when it closes
        an open run, and the id of that run's on event (None when it closes none); changes
        nothing."""
        sig = signature_of(event, self.utc_offset_s)
        closes = self.pairer.match(event, None)
        if closes is None:
            return sig, features(sig), None
        hours = (event.ts - closes.start_ts).total_seconds() / 3600.0
        sig = sig.with_run(hours * 3600.0, hours * (closes.power_w - event.delta_p_w) / 2.0)
        return sig, features(sig), closes.on_event_id

    def _provisional_rows(self, event: Event) -> list[TableRow]:
        """A provisional event (`nilm.provisional`): its device as the models see it now.

        Nothing is learned, paired, clustered or counted: the final event does all of that,
        once, so a provisional event that is refined, replaced or retracted leaves no trace.
        """
        _sig, x, closes_id = self._features(event)
        device, confidence, score = self._answer(event, x, closes_id, self._context(event))
        uncertainty = 1.0 - confidence * (1.0 - score.novelty)
        self.provisional_ids[event.event_id] = None
        self.provisional_ids.move_to_end(event.event_id)
        while len(self.provisional_ids) > _PROVISIONAL_MEMORY:
            self.provisional_ids.popitem(last=False)
        return [event_row(event, device, confidence, score.novelty, uncertainty)]

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
            rows = self._name_cluster(label.event_id[len(CLUSTER_LABEL_PREFIX) :], label.device)
            return rows + self._catch_up()
        seen = self.recent.get(label.event_id)
        if seen is None and label.event_id in self.provisional_ids:
            # The event is still provisional: learn the label when it is final.
            self.parked_labels[label.event_id] = label
            while len(self.parked_labels) > _PROVISIONAL_MEMORY:
                self.parked_labels.popitem(last=False)
            return []
        if seen is None:
            logger.warning(
                "label %s names event %s, which is not among the last %s events of home %s: "
                "not learned", label.label_id, label.event_id, self.memory_events, self.home_id,
            )  # fmt: skip
            return self._catch_up()
        rows = self._learn(seen, label.device)
        self._mark_stale()
        return rows + self._catch_up()

    def _learn(self, seen: _Seen, device: str) -> list[TableRow]:
        if seen.label == device:
            return [seen.row()]
        corrected = seen.label is not None
        seen.label = device
        self.label_order = [
            k for k in self.label_order if k in self.recent and k != seen.event.event_id
        ]
        self.label_order.append(seen.event.event_id)
        if corrected:
            # The newest label wins. River's classifiers cannot forget one example, so the models
            # are rebuilt from the remembered labels in the order they came, the corrected one
            # last (labels older than the memory are lost to a rebuild: rare, and logged).
            logger.info("event %s re-labelled as %s: models rebuilt from %d labels",
                        seen.event.event_id, device, len(self.label_order))  # fmt: skip
            self._rebuild_models()
        else:
            self.classifier.learn_one(seen.x, device)
            self.calibration.learn_one(weighted(seen.x), device, _context_of(seen))
            self.novelty.learn_label(seen.x, device)
        return [seen.row(), *self._refresh_activation(seen.event.event_id)]

    def _rebuild_models(self) -> None:
        self.classifier = self.classifier.clone()
        self.calibration = self.calibration.clone()
        self.novelty.forget_labels()
        for event_id in self.label_order:
            labelled = self.recent[event_id]
            assert labelled.label is not None
            self.classifier.learn_one(labelled.x, labelled.label)
            self.calibration.learn_one(
                weighted(labelled.x), labelled.label, _context_of(labelled)
            )
            self.novelty.learn_label(labelled.x, labelled.label)

    def _name_cluster(self, cluster_id: str, device: str) -> list[TableRow]:
        cluster = self.clusters.name(cluster_id, device)
        if cluster is None:
            logger.warning("no unknown-device cluster %s in home %s", cluster_id, self.home_id)
            return []
        rows: list[TableRow] = [("clusters", cluster.row())]
        for seen in list(self.recent.values()):
            if seen.cluster_id == cluster_id:
                rows += self._learn(seen, device)
        self._mark_stale()
        return rows

    # -- what the dashboard and eval read ----------------------------------------------------

    def uncertainty_queue(self, limit: int = 20) -> list[tuple[str, float]]:
        """Unlabelled recent events, most uncertain first: the active-learning order."""
        pending = [(s.event.event_id, s.uncertainty) for s in self.recent.values() if not s.label]
        pending.sort(key=lambda p: (-p[1], p[0]))
        return pending[:limit]
