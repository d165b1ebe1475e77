"""A fitted batch model served from a file, behind the online models' River protocol.

A retraining job (`nilm eval`, a scheduled task, a notebook) fits a model on a home's confirmed
events and writes it with `save_model`, atomically. The flow keeps a `ServedModel` in its state:
it answers `predict_proba_one(x)` / `predict_one(x)` over the same feature dict the online
classifier sees and, every `check_every` predictions, looks at the file and reloads it when it
was replaced. Networks also need the event's window in `x`, as `window_features` puts it; without
it they answer nothing ({}), as an online model does before its first label.

Model files are pickles, so load only files this system wrote.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nilm.batch.model import BatchClassifier, EventSamples
from nilm.batch.windows import window_from_features

__all__ = ["FORMAT", "ServedModel", "load_model", "save_model", "train_and_save"]

log = logging.getLogger(__name__)

FORMAT = "nilm-batch-model/1"


def save_model(model: BatchClassifier, path: str | Path) -> Path:
    """Write `model` to `path` atomically (a reader sees the old file or the new one whole)."""
    if not model.classes_:
        raise ValueError(f"{model.name} is not fitted: fit it before saving it")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump({"format": FORMAT, "model": model}, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_model(path: str | Path) -> BatchClassifier:
    """The model `save_model` wrote to `path`."""
    with open(path, "rb") as f:
        payload = pickle.load(f)  # our own files only, as the module says
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a batch model file ({FORMAT}); write it with save_model")
    model = payload["model"]
    if not isinstance(model, BatchClassifier):
        raise ValueError(f"{path} holds {type(model).__name__}, not a batch model")
    return model


def train_and_save(
    model: BatchClassifier, samples: EventSamples, devices: Sequence[str], path: str | Path
) -> Path:
    """Fit `model` on the confirmed `samples` and write it where a `ServedModel` reads it."""
    model.fit(samples, devices)
    return save_model(model, path)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class ServedModel:
    """The model in `path`, reloaded when the file is replaced; River's prediction protocol.

    Parameters
    ----------
    path
        Where `save_model` writes the model. A missing file serves no prediction ({}) until
        it appears.
    check_every
        Predictions between two looks at the file.

    Examples
    --------
    >>> import tempfile
    >>> from nilm.batch.xgboost_model import XGBoostClassifier
    >>> x = np.array([[0.0], [0.1], [3.0], [3.1]] * 5)
    >>> s = EventSamples(x, np.zeros((20, 1, 1), np.float32), ("log_p",))
    >>> path = Path(tempfile.mkdtemp()) / "home.model"
    >>> served = ServedModel(path)
    >>> served.predict_proba_one({"log_p": 3.0})
    {}
    >>> _ = train_and_save(XGBoostClassifier(n_estimators=10), s, ["tv", "tv", "oven", "oven"] * 5,
    ...                    path)
    >>> served.reload(), served.predict_one({"log_p": 3.0})
    (True, 'oven')
    """

    def __init__(self, path: str | Path, check_every: int = 100) -> None:
        self.path = Path(path)
        self.check_every = check_every
        self.model: BatchClassifier | None = None
        self.stamp: tuple[int, int, int] | None = None
        self.calls = 0
        self.reload()

    def clone(self) -> ServedModel:
        """A new server of the same file (it loads the file as it is now)."""
        return ServedModel(self.path, self.check_every)

    @property
    def classes(self) -> set[str]:
        return set(self.model.classes_) if self.model is not None else set()

    def reload(self) -> bool:
        """Load the file if it changed since the last load; True when a new model was loaded.

        A file that cannot be read keeps the model in service and logs why.
        """
        stamp = _stamp(self.path)
        if stamp is None or stamp == self.stamp:
            return False
        try:
            model = load_model(self.path)
        except (OSError, ValueError, pickle.UnpicklingError, EOFError) as err:
            log.warning(
                "cannot load batch model %s (%s); keeping the one in service", self.path, err
            )
            return False
        self.model, self.stamp = model, stamp
        log.info("serving %s from %s (%d devices)", model.name, self.path, len(model.classes_))
        return True

    def learn_one(self, x: Mapping[str, float], device: str) -> None:
        """Nothing: a batch model learns when it is retrained and its file replaced."""

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[str, float]:
        """Each device's probability for the event described by `x`; {} when none can be given."""
        self.calls += 1
        if self.check_every > 0 and self.calls % self.check_every == 0:
            self.reload()
        model = self.model
        if model is None:
            return {}
        channels, samples = model.window_shape_
        window = window_from_features(x, channels, samples) if model.needs_windows else None
        if model.needs_windows and window is None:
            return {}
        row = np.array(
            [[float(x.get(name, 0.0)) for name in model.feature_names_]], dtype=np.float64
        )
        windows = window if window is not None else np.zeros((channels, samples), np.float32)
        proba = model.predict_proba(EventSamples(row, windows[None, ...], model.feature_names_))[0]
        return {device: float(p) for device, p in zip(model.classes_, proba, strict=True)}

    def predict_one(self, x: Mapping[str, float]) -> str | None:
        """The most probable device, or None when no model is in service."""
        proba = self.predict_proba_one(x)
        return max(proba, key=lambda d: proba[d]) if proba else None

    def __getstate__(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "check_every": self.check_every,
            "model": self.model,
            "stamp": self.stamp,
            "calls": self.calls,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
