"""Batch device classifiers (XGBoost, a 1D CNN, an LSTM) retrained from confirmations.

Importing this package is light: xgboost, torch and imbalanced-learn are imported only by the
modules that need them (`nilm.batch.xgboost_model`, `nilm.batch.cnn`, `nilm.batch.lstm`), which
need the `batch` extra (`pip install '.[batch]'`).
"""

from nilm.batch.features import FEATURE_NAMES, event_features
from nilm.batch.model import IMBALANCE_OPTIONS, BatchClassifier, EventSamples, make_model
from nilm.batch.windows import EventWindow, EventWindower, extract_windows

__all__ = [
    "FEATURE_NAMES",
    "IMBALANCE_OPTIONS",
    "BatchClassifier",
    "EventSamples",
    "EventWindow",
    "EventWindower",
    "event_features",
    "extract_windows",
    "make_model",
]
