"""What every batch classifier shares: its training data, its protocol, and its factory.

A batch classifier is fitted on `EventSamples` (the signatures and the windows of labelled
events) with device names as targets, and predicts class probabilities for new samples. Each
model kind takes the input it is built for: XGBoost the signatures, the networks the windows.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from nilm.batch.features import FEATURE_NAMES, event_features, feature_matrix
from nilm.batch.windows import EventWindow
from nilm.records import Event

__all__ = ["IMBALANCE_OPTIONS", "MODEL_KINDS", "BatchClassifier", "EventSamples", "make_model"]

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

# The answers to class imbalance each model kind offers; focal loss needs a network.
IMBALANCE_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "xgboost": ("none", "smote", "class_weight"),
    "cnn": ("none", "smote", "class_weight", "focal"),
    "lstm": ("none", "smote", "class_weight", "focal"),
}
MODEL_KINDS = tuple(IMBALANCE_OPTIONS)
_MODULES = {
    "xgboost": ("nilm.batch.xgboost_model", "XGBoostClassifier"),
    "cnn": ("nilm.batch.cnn", "CnnClassifier"),
    "lstm": ("nilm.batch.lstm", "LstmClassifier"),
}


@dataclass(frozen=True, slots=True, eq=False)
class EventSamples:
    """Signatures `features` (n, len(feature_names)) and windows (n, channels, samples).

    Examples
    --------
    >>> s = EventSamples(np.zeros((3, 2)), np.zeros((3, 4, 5), np.float32), ("x", "y"))
    >>> len(s), len(s.take(np.array([0, 2])))
    (3, 2)
    """

    features: FloatArray
    windows: Float32Array
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __post_init__(self) -> None:
        if len(self.features) != len(self.windows):
            raise ValueError(
                f"{len(self.features)} feature rows but {len(self.windows)} windows: "
                "give one window per event"
            )

    def __len__(self) -> int:
        return len(self.features)

    def take(self, index: IntArray | npt.NDArray[np.bool_]) -> EventSamples:
        return EventSamples(self.features[index], self.windows[index], self.feature_names)

    @classmethod
    def from_events(cls, events: Sequence[Event], windows: Sequence[EventWindow]) -> EventSamples:
        """Samples of events and their windows (matched by event id, in `events` order)."""
        by_id = {w.event_id: w for w in windows}
        missing = [e.event_id for e in events if e.event_id not in by_id]
        if missing:
            raise ValueError(f"no window for events {missing[:5]}: cut them with extract_windows")
        return cls.from_dicts(
            [event_features(e) for e in events], [by_id[e.event_id].values for e in events]
        )

    @classmethod
    def from_dicts(
        cls,
        rows: Sequence[Mapping[str, float]],
        windows: Sequence[Float32Array],
        names: Sequence[str] = FEATURE_NAMES,
    ) -> EventSamples:
        """Samples of feature dicts and window arrays of one shape."""
        stacked = (
            np.stack(windows).astype(np.float32) if windows else np.zeros((0, 0, 0), np.float32)
        )
        return cls(feature_matrix(rows, names), stacked, tuple(names))


class BatchClassifier(ABC):
    """A device classifier trained in batch on labelled events.

    Parameters
    ----------
    imbalance
        One of the kind's `IMBALANCE_OPTIONS`: 'none', 'smote' (synthetic minority samples),
        'class_weight' (balanced loss weights) or, for networks, 'focal' (focal loss).
    seed
        Seeds every random choice, so one seed gives one model.
    """

    kind: ClassVar[str] = ""
    needs_windows: ClassVar[bool] = False

    def __init__(self, imbalance: str = "none", seed: int = 0) -> None:
        options = IMBALANCE_OPTIONS[self.kind]
        if imbalance not in options:
            raise ValueError(
                f"imbalance {imbalance!r} is not offered by {self.kind}; choose one of {options}"
            )
        self.imbalance = imbalance
        self.seed = seed
        self.classes_: tuple[str, ...] = ()
        self.feature_names_: tuple[str, ...] = ()
        self.window_shape_: tuple[int, int] = (0, 0)

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.imbalance}"

    def fit(self, samples: EventSamples, y: Sequence[str]) -> BatchClassifier:
        """Train from scratch on `samples` labelled `y`; returns self."""
        if len(samples) != len(y) or len(y) == 0:
            raise ValueError(
                f"fit needs one label per sample and at least one; got "
                f"{len(samples)} samples and {len(y)} labels"
            )
        self.classes_ = tuple(sorted(set(y)))
        self.feature_names_ = samples.feature_names
        self.window_shape_ = (int(samples.windows.shape[1]), int(samples.windows.shape[2]))
        index = {c: i for i, c in enumerate(self.classes_)}
        target = np.array([index[c] for c in y], dtype=np.int64)
        if len(self.classes_) > 1:
            self._fit(samples, target)
        return self

    def predict_proba(self, samples: EventSamples) -> FloatArray:
        """(n, len(classes_)) probabilities; one class known means probability 1."""
        if not self.classes_:
            raise ValueError(f"{self.name} is not fitted: call fit with labelled events first")
        if len(self.classes_) == 1:
            return np.ones((len(samples), 1))
        if len(samples) == 0:
            return np.zeros((0, len(self.classes_)))
        return self._predict_proba(samples)

    def predict(self, samples: EventSamples) -> list[str]:
        proba = self.predict_proba(samples)
        return [self.classes_[i] for i in np.argmax(proba, axis=1).tolist()]

    @abstractmethod
    def _fit(self, samples: EventSamples, y: IntArray) -> None: ...

    @abstractmethod
    def _predict_proba(self, samples: EventSamples) -> FloatArray: ...


def make_model(
    kind: str, imbalance: str = "none", seed: int = 0, **options: Any
) -> BatchClassifier:
    """A new, unfitted model of `kind` ('xgboost', 'cnn' or 'lstm').

    The kind's module (and so xgboost or torch) is imported only here.

    >>> make_model("svm")
    Traceback (most recent call last):
    ...
    ValueError: unknown batch model 'svm'; choose one of ('xgboost', 'cnn', 'lstm')
    """
    if kind not in _MODULES:
        raise ValueError(f"unknown batch model {kind!r}; choose one of {MODEL_KINDS}")
    module, cls = _MODULES[kind]
    factory = getattr(importlib.import_module(module), cls)
    model: BatchClassifier = factory(imbalance=imbalance, seed=seed, **options)
    return model
