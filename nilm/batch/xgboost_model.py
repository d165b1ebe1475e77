"""Gradient-boosted trees (XGBoost) on the events' signatures: the batch baseline.

References
----------
Chen & Guestrin (2016). XGBoost: A Scalable Tree Boosting System. KDD.
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from nilm.batch.imbalance import class_weights, smote
from nilm.batch.model import BatchClassifier, EventSamples, FloatArray, IntArray

__all__ = ["XGBoostClassifier"]


class XGBoostClassifier(BatchClassifier):
    """XGBoost on `EventSamples.features`, with SMOTE or balanced sample weights.

    Parameters
    ----------
    imbalance
        'none', 'smote' or 'class_weight'.
    seed
        Seeds the trees' subsampling and SMOTE.
    n_estimators, max_depth, learning_rate
        The boosting schedule; small by default, as a home gives hundreds of labels at most.
    min_child_weight
        The least hessian a leaf may hold. XGBoost's default (1) needs about a dozen samples of
        a class in a leaf under the softmax objective (each weighs p(1-p) < 0.1 with twelve
        devices), more than a user confirms of a rare device: keep it small.
    ignore_features
        Features the trees do not see. With ten labels of a device, a split on the time of day
        of those ten events separates it from another device as well as its power does, and
        then fails on the next day: time of day is left out by default.
    n_jobs
        Threads XGBoost may use; one is as fast for a few hundred events and does not fight
        the flow for the cores.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(4, 1, (20, 3))])
    >>> s = EventSamples(x, np.zeros((40, 1, 1), np.float32), ("a", "b", "c"))
    >>> m = XGBoostClassifier(n_estimators=20).fit(s, ["off"] * 20 + ["on"] * 20)
    >>> m.predict(s.take(np.array([0, 39])))
    ['off', 'on']
    """

    kind = "xgboost"

    def __init__(
        self,
        imbalance: str = "none",
        seed: int = 0,
        n_estimators: int = 150,
        max_depth: int = 4,
        learning_rate: float = 0.15,
        n_jobs: int = 1,
        min_child_weight: float = 0.01,
        ignore_features: tuple[str, ...] = ("tod_sin", "tod_cos"),
    ) -> None:
        super().__init__(imbalance, seed)
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.n_jobs = n_jobs
        self.min_child_weight = min_child_weight
        self.ignore_features = ignore_features
        self.booster: xgb.XGBClassifier | None = None

    def _columns(self, samples: EventSamples) -> FloatArray:
        keep = [i for i, n in enumerate(samples.feature_names) if n not in self.ignore_features]
        return samples.features[:, keep]

    def _fit(self, samples: EventSamples, y: IntArray) -> None:
        x = self._columns(samples)
        weight = None
        if self.imbalance == "smote":
            x, y = smote(x, y, seed=self.seed)
        elif self.imbalance == "class_weight":
            weight = class_weights(y, len(self.classes_))[y]
        self.booster = xgb.XGBClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            subsample=0.9,
            colsample_bytree=0.9,
            min_child_weight=self.min_child_weight,
            tree_method="hist",
            objective="multi:softprob",
            num_class=len(self.classes_),
            n_jobs=self.n_jobs,
            random_state=self.seed,
            verbosity=0,
        )
        self.booster.fit(x, y, sample_weight=weight)

    def _predict_proba(self, samples: EventSamples) -> FloatArray:
        if self.booster is None:
            raise ValueError("the booster is missing: fit with two devices or more first")
        proba = np.asarray(self.booster.predict_proba(self._columns(samples)), dtype=np.float64)
        return proba
