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


# Candidates for prequential selection, by name. Features come pre-scaled by
# `nilm.signatures.features` (log power, ratios), so distance-based models take them as they are.
CLASSIFIERS = {
    "knn": _knn,
    "knn1": _knn1,
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
FEATURE_WEIGHTS = {
    "on": 3.0,
    "log_p": 30.0,
    "q_ratio": 3.0,
    "pf_step": 2.0,
    "leg_a": 3.0,
    "leg_b": 3.0,
    "leg_ab": 3.0,
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
