"""`nilm retrain`: fit a batch model on a home's confirmed labels in DuckDB, write it to serve.

The training set is every event a user confirmed (the latest label of each event; an event of an
unknown-device cluster the user named counts as that device unless it has a label of its own).
Each event's features are rebuilt from its stored row as the flow's `HomeLearner` builds the
dict it gives its served model (`nilm.batch.features.learner_feature_rows`, pairing replayed
over all the home's events in time order); the networks also take the event's stored window
(`event_windows`). The model is written atomically (`nilm.batch.served.save_model`), so a flow
serving that file (`batch_model_path`) switches to it on its next look and never reads half a file.

DuckDB lets one process open a file at a time: while a flow holds the database, this raises
`flows.database.DatabaseLocked`. Stop the flow first, or retrain from a copy of the file.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from flows.database import open_database
from nilm.batch.features import event_from_row, feature_matrix, learner_feature_rows
from nilm.batch.model import IMBALANCE_OPTIONS, EventSamples, make_model
from nilm.batch.served import save_model
from nilm.learning import CLUSTER_LABEL_PREFIX

__all__ = ["MIN_LABELS_PER_DEVICE", "TrainingSet", "load_training_set", "parse_spec", "run_retrain"]

log = logging.getLogger(__name__)

# A device with fewer confirmations is left out: one example teaches a tree or a network nothing.
MIN_LABELS_PER_DEVICE = 2

_EVENT_COLUMNS = (
    "event_id, home_id, ts, legs, delta_p_w, delta_q_var, delta_s_va, delta_current_a, "
    "delta_pf, p_before_w, p_after_w, delta_p_a_w, delta_p_b_w, voltage_v, inrush_peak_w, "
    "ramp_s, settle_slope_w_per_s, detector, device, cluster_id"
)


@dataclass(frozen=True, slots=True, eq=False)
class TrainingSet:
    """The confirmed events of one home: samples, their devices, and what was left out."""

    home_id: str
    samples: EventSamples
    devices: list[str]
    left_out: dict[str, int]


def parse_spec(spec: str) -> tuple[str, str]:
    """'xgboost', 'xgboost:smote', 'cnn:focal' … as (kind, imbalance).

    >>> parse_spec("xgboost:class_weight"), parse_spec("lstm")
    (('xgboost', 'class_weight'), ('lstm', 'none'))
    >>> parse_spec("xgboost:focal")
    Traceback (most recent call last):
    ...
    ValueError: --model xgboost:focal: xgboost offers imbalance none, smote, class_weight
    """
    kind, _, imbalance = spec.strip().partition(":")
    imbalance = imbalance or "none"
    if kind not in IMBALANCE_OPTIONS:
        raise ValueError(
            f"--model {spec}: unknown model {kind!r}; choose one of {', '.join(IMBALANCE_OPTIONS)}"
        )
    if imbalance not in IMBALANCE_OPTIONS[kind]:
        raise ValueError(
            f"--model {spec}: {kind} offers imbalance {', '.join(IMBALANCE_OPTIONS[kind])}"
        )
    return kind, imbalance


def _home(con: duckdb.DuckDBPyConnection, home_id: str | None) -> str:
    homes = [r[0] for r in con.execute("SELECT DISTINCT home_id FROM events ORDER BY 1").fetchall()]
    if home_id is not None:
        if home_id not in homes:
            raise ValueError(f"home {home_id!r} has no events in this database; homes: {homes}")
        return home_id
    if len(homes) != 1:
        raise ValueError(
            f"the database holds {len(homes)} homes ({homes}): choose one with --home"
            if homes
            else "the database holds no events: replay or run the flow first"
        )
    return str(homes[0])


def _confirmed(con: duckdb.DuckDBPyConnection, home_id: str) -> dict[str, str]:
    """event_id -> device: each event's latest label, then the clusters the user named."""
    rows = con.execute(
        "SELECT l.event_id, l.device FROM labels l "
        "JOIN (SELECT event_id, max(label_id) AS label_id FROM labels GROUP BY event_id) m "
        "USING (event_id, label_id) ORDER BY l.label_id",
    ).fetchall()
    named: dict[str, str] = {}
    confirmed: dict[str, str] = {}
    for event_id, device in rows:
        if event_id.startswith(CLUSTER_LABEL_PREFIX):
            named[event_id[len(CLUSTER_LABEL_PREFIX) :]] = device
        else:
            confirmed[event_id] = device
    if named:
        members = con.execute(
            "SELECT event_id, cluster_id FROM events WHERE home_id = ? AND cluster_id IS NOT NULL",
            [home_id],
        ).fetchall()
        for event_id, cluster_id in members:
            if cluster_id in named and event_id not in confirmed:
                confirmed[event_id] = named[cluster_id]
    return confirmed


def _windows(
    con: duckdb.DuckDBPyConnection, home_id: str
) -> dict[str, np.ndarray[Any, np.dtype[np.float32]]]:
    """The home's stored windows by event id ({} for a database made before the table)."""
    found = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'event_windows'"
    ).fetchone()
    if not found or not found[0]:
        return {}
    rows = con.execute(
        'SELECT event_id, channels, samples, "window" FROM event_windows WHERE home_id = ?',
        [home_id],
    ).fetchall()
    return {
        event_id: np.asarray(values, dtype=np.float32).reshape(channels, samples)
        for event_id, channels, samples, values in rows
    }


def load_training_set(
    con: duckdb.DuckDBPyConnection,
    home_id: str | None = None,
    needs_windows: bool = False,
    utc_offset_s: int = 0,
) -> TrainingSet:
    """The confirmed events of `home_id` (the only home when None) as batch-model samples.

    Raises ValueError, saying what is missing, when fewer than two devices have at least
    `MIN_LABELS_PER_DEVICE` confirmations (with their windows, when `needs_windows`).
    """
    home = _home(con, home_id)
    confirmed = _confirmed(con, home)
    cursor = con.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE home_id = ? AND provisional IS NOT TRUE "
        "ORDER BY ts, event_id",
        [home],
    )
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    events = [event_from_row(r) for r in rows]
    # Pairing is replayed with the devices the flow stored (confirmed ones where it has them).
    stored = [confirmed.get(r["event_id"], r["device"]) for r in rows]
    features = learner_feature_rows(events, stored, utc_offset_s)
    picked = [i for i, e in enumerate(events) if e.event_id in confirmed]
    left_out: Counter[str] = Counter()
    windows = _windows(con, home) if needs_windows else {}
    if needs_windows:
        # One shape for all (the flow's default is 4 x 120); any other is left out.
        shapes = Counter(
            windows[events[i].event_id].shape for i in picked if events[i].event_id in windows
        )
        shape = shapes.most_common(1)[0][0] if shapes else None
        kept = [
            i
            for i in picked
            if events[i].event_id in windows and windows[events[i].event_id].shape == shape
        ]
        left_out.update(confirmed[events[i].event_id] for i in sorted(set(picked) - set(kept)))
        picked = kept
    counts = Counter(confirmed[events[i].event_id] for i in picked)
    few = {d for d, n in counts.items() if n < MIN_LABELS_PER_DEVICE}
    left_out.update({d: counts[d] for d in few})
    picked = [i for i in picked if confirmed[events[i].event_id] not in few]
    devices = [confirmed[events[i].event_id] for i in picked]
    if len(set(devices)) < 2:
        have = ", ".join(f"{d}: {n}" for d, n in sorted(counts.items())) or "none"
        need = " with a stored window" if needs_windows else ""
        raise ValueError(
            f"home {home!r} has too few confirmed labels to train a model: it needs at least 2 "
            f"devices with {MIN_LABELS_PER_DEVICE} or more confirmed events{need} each "
            f"(labels per device: {have}); confirm more events in the dashboard or with "
            "'nilm label', then retrain"
        )
    x = [features[i] for i in picked]
    feature_names = tuple(sorted({k for row in x for k in row}))
    if needs_windows:
        stacked = np.stack([windows[events[i].event_id] for i in picked])
    else:
        stacked = np.zeros((len(picked), 1, 1), dtype=np.float32)
    samples = EventSamples(feature_matrix(x, feature_names), stacked, feature_names)
    return TrainingSet(home, samples, devices, dict(left_out))


def run_retrain(
    db_path: str | Path,
    model: str,
    out: str | Path,
    home_id: str | None = None,
    utc_offset_s: int = 0,
    seed: int = 0,
    echo: Callable[[str], None] = print,
) -> int:
    """Train `model` ('xgboost[:smote|:class_weight]', 'cnn[:…]', 'lstm[:…]') and write `out`.

    Returns the number of confirmed events it was trained on. Raises `DatabaseLocked` while a
    flow holds the database, ValueError for a bad spec or too few labels, ImportError when the
    `batch` extra is not installed.
    """
    kind, imbalance = parse_spec(model)
    estimator = make_model(kind, imbalance, seed)  # imports xgboost or torch: fail before work
    con = open_database(db_path, read_only=True)
    try:
        training = load_training_set(con, home_id, estimator.needs_windows, utc_offset_s)
    finally:
        con.close()
    started = time.perf_counter()
    estimator.fit(training.samples, training.devices)
    seconds = time.perf_counter() - started
    path = save_model(estimator, out)
    counts = Counter(training.devices)
    echo(
        f"trained {estimator.name} for home {training.home_id!r} on {len(training.devices)} "
        f"confirmed events of {len(counts)} devices ("
        + ", ".join(f"{d} {n}" for d, n in sorted(counts.items()))
        + f") in {seconds:.1f} s; wrote {path}"
        + (
            "; left out (too few labels or no window): "
            + ", ".join(f"{d} {n}" for d, n in sorted(training.left_out.items()))
            if training.left_out
            else ""
        )
    )
    log.info("retrained %s from %s into %s", estimator.name, db_path, path)
    return len(training.devices)
