"""Device recognition: a River classifier on event features, with its class-imbalance strategy.

`DeviceClassifier` composes a River pipeline chosen by name from `CLASSIFIERS` and wraps it in the
imbalance strategy named in `IMBALANCE` (River's `imblearn` samplers, or class weights). It learns
only from the user's confirmations, so it knows the devices that have been labelled at least once
and nothing else: telling the unknown apart is the novelty detector's job.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt
from river import (
    compose,
    forest,
    imblearn,
    linear_model,
    metrics,
    multiclass,
    naive_bayes,
    neighbors,
    optim,
    preprocessing,
    tree,
)

__all__ = [
    "CLASSIFIERS",
    "FEATURE_WEIGHTS",
    "IMBALANCE",
    "DeviceClassifier",
    "KernelClassifier",
    "PrequentialSelector",
    "make_classifier",
    "weighted",
]

logger = logging.getLogger(__name__)


def _knn(seed: int) -> Any:
    # The default engine keeps only the last 50 samples: a home labels more than that.
    engine = neighbors.LazySearch(window_size=2000)
    return neighbors.KNNClassifier(n_neighbors=3, engine=engine, weighted=True)


def _knn1(seed: int) -> Any:
    return neighbors.KNNClassifier(n_neighbors=1, engine=neighbors.LazySearch(window_size=2000))


def _hoeffding(seed: int) -> Any:
    return tree.HoeffdingTreeClassifier(grace_period=10, delta=1e-3, leaf_prediction="nba")


def _arf(seed: int) -> Any:
    return forest.ARFClassifier(n_models=10, grace_period=10, delta=1e-3, seed=seed)


def _gaussian_nb(seed: int) -> Any:
    return naive_bayes.GaussianNB()  # type: ignore[no-untyped-call]


def _softmax(seed: int) -> Any:
    model = linear_model.SoftmaxRegression(optimizer=optim.SGD(0.1))
    return compose.Pipeline(preprocessing.StandardScaler(), model)


def _logistic_ovr(seed: int) -> Any:
    model = multiclass.OneVsRestClassifier(linear_model.LogisticRegression(optim.SGD(0.1)))
    return compose.Pipeline(preprocessing.StandardScaler(), model)


def _kernel(seed: int) -> Any:
    return KernelClassifier()


# Candidates for prequential selection, by name. Features come pre-scaled by
# `nilm.signatures.features` (log power, ratios), so distance-based models take them as they are.
CLASSIFIERS = {
    "knn": _knn,
    "knn1": _knn1,
    "kernel": _kernel,
    "hoeffding": _hoeffding,
    "arf": _arf,
    "gaussian_nb": _gaussian_nb,
    "softmax": _softmax,
    "logistic_ovr": _logistic_ovr,
}

# How the classifier sees rare devices: as they come, re-sampled towards a uniform class
# distribution by River's samplers, or weighted by inverse class frequency.
IMBALANCE = ("none", "oversample", "undersample", "weights")


def make_classifier(name: str, seed: int = 0) -> Any:
    """A fresh River classifier from `CLASSIFIERS`.

    >>> type(make_classifier("knn")).__name__
    'KNNClassifier'
    """
    try:
        factory = CLASSIFIERS[name]
    except KeyError:
        known = sorted(CLASSIFIERS)
        raise ValueError(f"unknown classifier {name!r}; choose one of {known}") from None
    return factory(seed)


def _accepts_weight(model: Any) -> bool:
    return isinstance(model, (tree.HoeffdingTreeClassifier, forest.ARFClassifier))


# Feature weights for distance: log10 power counts most (0.05, about 12 %, tells a 4.5 kW water
# heater from a 5 kW dryer), shape ratios count as they are, and time of day only breaks ties.
# A device is wired to its legs, so another leg set weighs as much as a 3.7-fold power step
# (at 3 it weighed 1.4-fold, and a fridge on leg a was taken for a PC of its size on leg b).
FEATURE_WEIGHTS = {
    "on": 3.0,
    "log_p": 30.0,
    "q_ratio": 3.0,
    "pf_step": 2.0,
    "leg_a": 12.0,
    "leg_b": 12.0,
    "leg_ab": 12.0,
    "inrush": 1.0,
    "ramp": 1.0,
    "settle": 0.5,
    "run": 0.3,
    "tod_sin": 0.3,
    "tod_cos": 0.3,
}


def weighted(x: dict[str, float]) -> dict[str, float]:
    """Features multiplied by `FEATURE_WEIGHTS` (unknown names keep weight 1)."""
    return {k: v * FEATURE_WEIGHTS.get(k, 1.0) for k, v in x.items()}


class DeviceClassifier:
    """Which labelled device an event's features look like, learned one confirmation at a time.

    Parameters
    ----------
    model
        A name in `CLASSIFIERS`.
    imbalance
        A name in `IMBALANCE`: `none`; `oversample` / `undersample` wrap the model in River's
        `imblearn.RandomOverSampler` / `RandomUnderSampler` towards a uniform distribution over
        the devices seen so far; `weights` weighs each example by the inverse frequency of its
        class (as a sample weight where the model takes one, by repetition where it does not).
    seed
        Seeds the model and the samplers.

    Examples
    --------
    >>> clf = DeviceClassifier("knn", seed=1)
    >>> clf.predict_one({"log_p": 2.1}) is None
    True
    >>> for p, device in [(2.1, "fridge"), (2.12, "fridge"), (3.7, "dryer"), (3.68, "dryer")]:
    ...     clf.learn_one({"log_p": p}, device)
    >>> clf.predict_one({"log_p": 3.6}), sorted(clf.classes)
    ('dryer', ['dryer', 'fridge'])
    """

    def __init__(self, model: str = "knn", imbalance: str = "none", seed: int = 0) -> None:
        if imbalance not in IMBALANCE:
            raise ValueError(f"unknown imbalance strategy {imbalance!r}; choose one of {IMBALANCE}")
        self.model = model
        self.imbalance = imbalance
        self.seed = seed
        self._inner: Any = make_classifier(model, seed)
        # Shared with the sampler, which reads it on every learn_one: kept uniform in place.
        self._desired: dict[str, float] = {}
        self._estimator: Any = self._inner
        if imbalance == "oversample":
            self._estimator = imblearn.RandomOverSampler(self._inner, self._desired, seed=seed)
        elif imbalance == "undersample":
            self._estimator = imblearn.RandomUnderSampler(self._inner, self._desired, seed=seed)
        self.counts: Counter[str] = Counter()

    @property
    def classes(self) -> set[str]:
        return set(self.counts)

    def clone(self) -> DeviceClassifier:
        return DeviceClassifier(self.model, self.imbalance, self.seed)

    def learn_one(self, x: dict[str, float], device: str) -> None:
        """Learn that features `x` were device `device`."""
        self.counts[device] += 1
        x = weighted(x)
        if device not in self._desired or len(self._desired) != len(self.counts):
            share = 1.0 / len(self.counts)
            for name in self.counts:
                self._desired[name] = share
        if self.imbalance != "weights":
            self._estimator.learn_one(x, device)
            return
        total = sum(self.counts.values())
        weight = total / (len(self.counts) * self.counts[device])
        if _accepts_weight(self._inner):
            self._inner.learn_one(x, device, w=weight)
        else:
            for _ in range(max(1, min(round(weight), 10))):
                self._inner.learn_one(x, device)

    def predict_proba_one(self, x: dict[str, float]) -> dict[str, float]:
        """Probabilities over labelled devices (empty before the first label); changes nothing."""
        if not self.counts:
            return {}
        proba: dict[str, Any] = self._estimator.predict_proba_one(weighted(x))
        clean = {str(k): float(v) for k, v in proba.items() if v is not None and math.isfinite(v)}
        total = sum(clean.values())
        if total <= 0:
            return {}
        return {k: v / total for k, v in clean.items()}

    def predict_one(self, x: dict[str, float]) -> str | None:
        """The most probable labelled device, or None before the first label."""
        proba = self.predict_proba_one(x)
        if not proba:
            return None
        return max(sorted(proba), key=lambda k: proba[k])


class PrequentialSelector:
    """Runs several `DeviceClassifier`s side by side and answers with the best one so far.

    Every confirmation first tests each candidate (its prediction goes into its own River
    `MacroF1`), then trains it: prequential evaluation on the labels themselves. Predictions come
    from the candidate with the highest macro-F1, the first listed on a tie.

    Parameters
    ----------
    models
        Names in `CLASSIFIERS`.
    imbalance
        The imbalance strategy every candidate uses.
    seed
        Seeds the candidates.

    Examples
    --------
    >>> sel = PrequentialSelector(("knn", "gaussian_nb"), seed=0)
    >>> for i in range(12):
    ...     sel.learn_one({"log_p": 2.0 + (i % 2) * 1.5 + 0.01 * i}, "dryer" if i % 2 else "fridge")
    >>> sel.best, sel.predict_one({"log_p": 3.52})
    ('knn', 'dryer')
    """

    def __init__(
        self,
        models: tuple[str, ...] = ("knn", "knn1", "hoeffding"),
        imbalance: str = "none",
        seed: int = 0,
    ) -> None:
        if not models:
            raise ValueError("PrequentialSelector needs at least one model name")
        self.models = tuple(models)
        self.imbalance = imbalance
        self.seed = seed
        self.candidates = {m: DeviceClassifier(m, imbalance, seed) for m in self.models}
        self.scores: dict[str, Any] = {
            m: metrics.MacroF1() for m in self.models  # type: ignore[no-untyped-call]
        }
        self.n_labels = 0

    @property
    def best(self) -> str:
        return max(self.models, key=lambda m: (self.scores[m].get(), -self.models.index(m)))

    @property
    def classes(self) -> set[str]:
        return self.candidates[self.models[0]].classes

    def clone(self) -> PrequentialSelector:
        return PrequentialSelector(self.models, self.imbalance, self.seed)

    def learn_one(self, x: dict[str, float], device: str) -> None:
        for name in self.models:
            model = self.candidates[name]
            if model.counts:
                self.scores[name].update(device, model.predict_one(x) or "")
            model.learn_one(x, device)
        self.n_labels += 1

    def predict_proba_one(self, x: dict[str, float]) -> dict[str, float]:
        return self.candidates[self.best].predict_proba_one(x)

    def predict_one(self, x: dict[str, float]) -> str | None:
        return self.candidates[self.best].predict_one(x)

    def report(self) -> dict[str, float]:
        """Each candidate's prequential macro-F1 on the labels so far."""
        return {m: float(self.scores[m].get()) for m in self.models}


class KernelClassifier:
    """Nearest-neighbour probabilities over devices, calibrated on the labels themselves.

    Each device keeps its last `max_per_device` confirmed events. An event's probability of
    device c follows a Gaussian kernel on its distance to c's nearest event,
    p(c | x) ∝ exp(-d_c² / (2 T²)), smoothed towards uniform by ε. The most probable device is
    the 1-nearest-neighbour's answer, but the probability now falls as the nearest events of two
    devices come close, or as the event sits far from every device. T and ε are chosen by
    leave-one-out on the remembered labels (each label predicted from all the others, the
    log-loss minimised over a fixed grid), so the figure is a frequency the home's own labels
    bear out, not the 100 % a 1-nearest-neighbour shows.

    Parameters
    ----------
    max_per_device
        Confirmed events kept per device (the oldest go first).
    refit_every
        Labels between two leave-one-out fits once `refit_every` × 10 labels are kept (before
        that, every label refits: the first labels move the fit most).
    loo_max
        The newest labels the leave-one-out fit predicts (it predicts each from all the rest).

    Examples
    --------
    >>> clf = KernelClassifier()
    >>> clf.predict_proba_one({"p": 1.0})
    {}
    >>> for i in range(12):
    ...     clf.learn_one({"p": 0.1 * (i % 5)}, "fridge")
    ...     clf.learn_one({"p": 0.35 + 0.1 * (i % 5)}, "freezer")
    ...     clf.learn_one({"p": 3.0 + 0.1 * (i % 4)}, "dryer")
    >>> def shown(p):
    ...     return {k: round(v, 2) for k, v in clf.predict_proba_one({"p": p}).items()}
    >>> shown(0.0)
    {'dryer': 0.0, 'freezer': 0.0, 'fridge': 1.0}
    >>> shown(0.37)  # where fridge and freezer labels interleave
    {'dryer': 0.0, 'freezer': 0.52, 'fridge': 0.48}
    """

    TEMPERATURES = tuple(round(0.05 * 1.25**k, 6) for k in range(30))
    SMOOTHING = (0.0, 0.005, 0.02, 0.05, 0.1, 0.2)
    CONTEXT_BOOSTS = (1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0)

    def __init__(self, max_per_device: int = 200, refit_every: int = 5, loo_max: int = 600) -> None:
        self.max_per_device = max_per_device
        self.refit_every = refit_every
        self.loo_max = loo_max
        self.keys: list[str] = []
        self.devices: list[str] = []
        # Rows of the remembered labels in learning order: (device, features).
        self.memory: list[tuple[str, dict[str, float]]] = []
        self.matrix = np.zeros((0, 0))
        self.owner = np.zeros(0, dtype=np.int64)
        self.temperature = 1.0
        self.smoothing = 0.02
        self.n_learned = 0
        # Per remembered label, the devices that were running when it happened (`learn_one`'s
        # `context`), and how many times likelier a running device is, fitted on them.
        self.contexts: list[frozenset[str]] = []
        self.context_boosts = (1.0, 1.0)  # (off events, on events)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # snapshots from before context kept no contexts: their labels knew none
        self.__dict__.setdefault("contexts", [frozenset()] * len(self.memory))
        self.__dict__.setdefault("context_boosts", (1.0, 1.0))

    def clone(self) -> KernelClassifier:
        return KernelClassifier(self.max_per_device, self.refit_every, self.loo_max)

    def learn_one(
        self, x: dict[str, float], y: str, context: frozenset[str] = frozenset()
    ) -> None:
        """Remember a confirmed event (and the devices running then, `context`) and, now and
        then, refit T, ε and the context boost."""
        self.n_learned += 1
        self.memory.append((y, dict(x)))
        self.contexts.append(frozenset(context))
        mine = [i for i, (d, _) in enumerate(self.memory) if d == y]
        if len(mine) > self.max_per_device:
            del self.memory[mine[0]]
            del self.contexts[mine[0]]
        self._rebuild()
        n = len(self.memory)
        if n < 10 * self.refit_every or self.n_learned % self.refit_every == 0:
            self._fit()

    def _rebuild(self) -> None:
        self.keys = sorted({k for _, row in self.memory for k in row})
        self.devices = sorted({d for d, _ in self.memory})
        index = {d: i for i, d in enumerate(self.devices)}
        self.matrix = np.array(
            [[row.get(k, 0.0) for k in self.keys] for _, row in self.memory], dtype=np.float64
        ).reshape(len(self.memory), len(self.keys))
        self.owner = np.array([index[d] for d, _ in self.memory], dtype=np.int64)

    def _nearest_by_device(self, distances: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Per row of `distances` (queries × memory), the distance to each device's nearest."""
        out = np.full((distances.shape[0], len(self.devices)), np.inf)
        for c in range(len(self.devices)):
            cols = self.owner == c
            if cols.any():
                out[:, c] = distances[:, cols].min(axis=1)
        return out

    def context_boost(self, x: dict[str, float]) -> float:
        """How many times likelier a running device is for an event like `x` (on or off)."""
        return self.context_boosts[1 if x.get("on", 0.0) > 0 else 0]

    def _running(self, contexts: list[frozenset[str]]) -> npt.NDArray[np.float64]:
        """1 where a device (column) was running for a query (row), else 0."""
        return np.array(
            [[1.0 if d in c else 0.0 for d in self.devices] for c in contexts], dtype=np.float64
        ).reshape(len(contexts), len(self.devices))

    def _proba(
        self,
        nearest: npt.NDArray[np.float64],
        temperature: float,
        smoothing: float,
        running: npt.NDArray[np.float64] | None = None,
        boost: float = 1.0,
    ) -> npt.NDArray[np.float64]:
        logits = -(nearest**2) / (2.0 * temperature**2)
        if running is not None and boost != 1.0:
            logits = logits + math.log(boost) * running
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
        smoothed: npt.NDArray[np.float64] = (1.0 - smoothing) * weights + (
            smoothing / nearest.shape[1]
        )
        return smoothed

    def _fit(self) -> None:
        n, n_devices = len(self.memory), len(self.devices)
        if n_devices < 2:
            return
        queries = np.arange(max(0, n - self.loo_max), n)
        diff = self.matrix[queries, None, :] - self.matrix[None, :, :]
        distances = np.sqrt((diff**2).sum(axis=2))
        distances[np.arange(len(queries)), queries] = np.inf  # leave the label itself out
        nearest = self._nearest_by_device(distances)
        truth = self.owner[queries]
        # A device's only label cannot be predicted from the others: it teaches nothing here.
        known = np.isfinite(nearest[np.arange(len(queries)), truth])
        if known.sum() < 5:
            return
        nearest, truth = nearest[known], truth[known]
        # A device with no other label is infinitely far: far enough to vanish, finite for exp.
        nearest = np.where(np.isfinite(nearest), nearest, 1e6)
        best: tuple[float, float, float] | None = None
        for temperature in self.TEMPERATURES:
            for smoothing in self.SMOOTHING:
                p = self._proba(nearest, temperature, smoothing)[np.arange(len(truth)), truth]
                loss = float(-np.log(np.maximum(p, 1e-6)).mean())
                if best is None or loss < best[0] - 1e-12:
                    best = (loss, temperature, smoothing)
        assert best is not None
        _, self.temperature, self.smoothing = best
        # then how much a running device is favoured, given T and ε, for off and on events
        # apart: an off event comes from a running device by nature, an on event only when a
        # running device steps up (a washer heating under its drum motor)
        running = self._running([self.contexts[int(q)] for q in queries[known]])
        on_col = self.keys.index("on") if "on" in self.keys else None
        is_on = (
            self.matrix[queries[known], on_col] > 0
            if on_col is not None
            else np.zeros(len(truth), dtype=bool)
        )
        boosts = []
        for rows in (~is_on, is_on):
            if not running[rows].any():
                boosts.append(1.0)
                continue
            losses = []
            for boost in self.CONTEXT_BOOSTS:
                p = self._proba(
                    nearest[rows], self.temperature, self.smoothing, running[rows], boost
                )
                p_true = p[np.arange(int(rows.sum())), truth[rows]]
                losses.append(float(-np.log(np.maximum(p_true, 1e-6)).mean()))
            boosts.append(self.CONTEXT_BOOSTS[int(np.argmin(losses))])
        self.context_boosts = (boosts[0], boosts[1])

    def predict_proba_one(
        self, x: dict[str, float], context: frozenset[str] = frozenset()
    ) -> dict[str, float]:
        """Probabilities over the devices learned (empty before the first label), the devices
        in `context` (running now) favoured by the fitted boost; changes nothing."""
        if not self.devices:
            return {}
        if len(self.devices) == 1:
            return {self.devices[0]: 1.0}
        query = np.array([[x.get(k, 0.0) for k in self.keys]], dtype=np.float64)
        distances = np.sqrt(((self.matrix - query) ** 2).sum(axis=1))[None, :]
        running = self._running([context]) if context else None
        p = self._proba(
            self._nearest_by_device(distances), self.temperature, self.smoothing, running,
            self.context_boost(x),
        )[0]  # fmt: skip
        return {d: float(p[i]) for i, d in enumerate(self.devices)}

    def predict_one(self, x: dict[str, float]) -> str | None:
        proba = self.predict_proba_one(x)
        return max(sorted(proba), key=lambda k: proba[k]) if proba else None
