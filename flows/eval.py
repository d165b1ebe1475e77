"""`nilm eval`: accuracy of the whole chain on recorded or simulated readings with ground truth.

The figures need a simulated user who reads the labelling queue and answers with what the truth
says, which closes a loop from the learner's outputs back to its label input. The dataflow
delivers labels through a polled table, asynchronously, so the loop would depend on timing. This
driver therefore runs the flow's own per-home objects directly, in the flow's order and with the
flow's settings (`ReadingValidator` -> `HomeEventDetector` -> `HomeLearner`, the classes the
dataflow keeps in its state), on the same chunks the replay source yields: the same code path
without the engine, and reproducible. `tests/flows/test_eval.py` checks that the events found this
way are those the dataflow writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from flows.recordings import read_truth_csv
from flows.sources import read_file_chunks
from nilm.classification import CLASSIFIERS, IMBALANCE
from nilm.detection import HomeEventDetector
from nilm.energy import binned_energy_from_intervals, binned_energy_from_power, energy_report
from nilm.evaluation import Evaluation
from nilm.learning import HomeLearner
from nilm.records import Event, ReadingBatch, TruthEvent
from nilm.settings import Settings
from nilm.validation import ReadingValidator, ValidationLimits

__all__ = [
    "SubMeter",
    "detect_events",
    "energy_section",
    "evaluate_events",
    "model_names",
    "read_batches",
    "read_submeter",
    "run_eval",
]

log = logging.getLogger(__name__)

# The online pipeline as the flow runs it (`HomeLearner`'s default): the calibrated kernel
# nearest-neighbour; `--models` compares the others.
DEFAULT_MODELS = ("kernel",)


def model_names() -> list[str]:
    """What `--models` accepts: `river` (the flow's selector), or `NAME[:IMBALANCE]` for one
    River classifier with an imbalance strategy, e.g. `knn:oversample`."""
    return ["river", *(f"{m}:{s}" for m in CLASSIFIERS for s in IMBALANCE)]


def read_batches(paths: Sequence[Path], settings: Settings | None = None) -> Iterator[ReadingBatch]:
    """The accepted readings of the files, validated as the flow validates them."""
    settings = settings or Settings()
    limits = ValidationLimits(voltage_v=(settings.voltage_min_v, settings.voltage_max_v))
    validator = ReadingValidator(limits)
    for path in paths:
        for _, chunk in read_file_chunks(path, settings.home_id):
            accepted, _rejected = validator.validate(chunk.batch, chunk.source)
            if len(accepted):
                yield accepted


def detect_events(batches: Sequence[ReadingBatch], settings: Settings | None = None) -> list[Event]:
    """The events the flow's detector finds in `batches` (one home per detector, flushed)."""
    settings = settings or Settings()
    detectors: dict[str, HomeEventDetector] = {}
    events: list[Event] = []
    for batch in batches:
        det = detectors.get(batch.home_id)
        if det is None:
            det = detectors[batch.home_id] = HomeEventDetector(
                batch.home_id, min_event_w=settings.min_event_w, detector=settings.detector
            )
        events += det.update(batch)
    for det in detectors.values():
        events += det.flush()
    return events


@dataclass(frozen=True)
class SubMeter:
    """Each device's own power, evenly sampled: `power_w[device][i]` at `t0_s + i * sample_s`."""

    t0_s: float
    sample_s: float
    power_w: dict[str, np.ndarray]


def read_submeter(path: Path) -> SubMeter:
    """Sub-metered truth: Parquet or CSV with `timestamp_utc` and one column of watts per device
    (as `benchmarks/antgen/generate.py` writes `submeter.parquet`). Must be evenly sampled."""
    import pandas as pd

    path = Path(path)
    frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    if "timestamp_utc" not in frame.columns:
        raise ValueError(f"{path}: sub-meter file needs a timestamp_utc column")
    ts = pd.to_datetime(frame.pop("timestamp_utc"), utc=True)
    seconds = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    order = np.argsort(seconds, kind="stable")
    seconds = seconds[order]
    steps = np.diff(seconds)
    sample_s = float(np.median(steps)) if len(steps) else 1.0
    if len(steps) and (sample_s <= 0 or not np.allclose(steps, sample_s, atol=1e-3)):
        raise ValueError(f"{path}: sub-meter samples must be evenly spaced")
    power = {str(c): frame[c].to_numpy(np.float64)[order] for c in frame.columns if c != "id"}
    return SubMeter(float(seconds[0]) if len(seconds) else 0.0, sample_s, power)


def energy_section(
    activations: Iterable[dict[str, Any]], submeter: SubMeter, bin_s: int = 60
) -> dict[str, Any]:
    """`"energy"` of `nilm eval`: the flow's activations (each run's energy spread evenly over
    it) against the sub-metered power, in bins of `bin_s` seconds (`nilm.energy`)."""
    truth = {d: binned_energy_from_power(p, bin_s, submeter.sample_s)
             for d, p in submeter.power_w.items()}  # fmt: skip
    n_bins = max((len(v) for v in truth.values()), default=0)
    runs = []
    unassigned_wh = 0.0
    for a in activations:
        if a.get("end_ts") is None or a.get("energy_wh") is None:
            continue
        start, end = a["start_ts"].timestamp(), a["end_ts"].timestamp()
        if end <= start:
            continue
        if a.get("device") is None:
            unassigned_wh += float(a["energy_wh"])
        runs.append((a.get("device"), start, end, float(a["energy_wh"]) * 3600.0 / (end - start)))
    estimated = binned_energy_from_intervals(runs, submeter.t0_s, n_bins, bin_s)
    report = energy_report(estimated, truth, bin_s)
    report["unassigned_kwh"] = round(unassigned_wh / 1000.0, 4)
    return report


def _learner_factory(models: tuple[str, ...], imbalance: str, seed: int) -> Any:
    def build(home_id: str) -> HomeLearner:
        return HomeLearner(home_id, models=models, imbalance=imbalance, seed=seed)

    return build


def _parse_model(name: str) -> tuple[tuple[str, ...], str]:
    if name == "river":
        return DEFAULT_MODELS, "none"
    model, _, imbalance = name.partition(":")
    if model not in CLASSIFIERS or (imbalance or "none") not in IMBALANCE:
        raise ValueError(f"unknown model {name!r}; choose from {model_names()}")
    return (model,), imbalance or "none"


def _check_model_names(models: Sequence[str]) -> None:
    """Refuses an unknown name before anything is read: a week of readings takes minutes."""
    from flows.batch_eval import batch_specs, is_batch_model

    batch_specs([m for m in models if is_batch_model(m)])
    for name in models:
        if not is_batch_model(name):
            _parse_model(name)


def evaluate_events(
    events: Sequence[Event],
    truth: Sequence[TruthEvent],
    label_budget: int = 10,
    models: tuple[str, ...] = DEFAULT_MODELS,
    imbalance: str = "none",
    holdout: Sequence[str] | None = None,
    degraded: dict[str, datetime] | None = None,
    seed: int = 0,
    submeter: SubMeter | None = None,
    energy_bin_s: int = 60,
    label_holdout_after: int | None = None,
) -> dict[str, Any]:
    """The evaluation figures of a learner over already detected events (with `submeter`, the
    energy assigned to each device against it, as `"energy"`).

    `label_holdout_after` (`Evaluation`): the user labels a held-out device once that many of
    its events were seen. The energy figure then also comes as it would be were the held-out
    devices never labelled (`"correctly_assigned_holdout_never_labelled"`, a second run): that
    one cannot exceed the share of energy the labelled devices draw."""
    ev = _evaluation(events, truth, label_budget, models, imbalance, holdout, degraded, seed,
                     label_holdout_after)  # fmt: skip
    result = ev.result()
    learner = next(iter(ev.learners.values()), None)
    if learner is not None:
        result["classification"]["selected"] = learner.classifier.best
        result["classification"]["prequential_on_labels"] = {
            k: round(v, 4) for k, v in learner.classifier.report().items()
        }
    if submeter is not None:
        result["energy"] = energy_section(ev.activations.values(), submeter, energy_bin_s)
        result["energy"]["label_holdout_after"] = label_holdout_after
        if label_holdout_after is not None:
            never = _evaluation(events, truth, label_budget, models, imbalance, holdout, degraded,
                                seed, None)  # fmt: skip
            never.result()  # the re-predictions at the end update the runs' devices
            old = energy_section(never.activations.values(), submeter, energy_bin_s)
            result["energy"]["correctly_assigned_holdout_never_labelled"] = old[
                "correctly_assigned"
            ]
    return result


def _evaluation(
    events: Sequence[Event],
    truth: Sequence[TruthEvent],
    label_budget: int,
    models: tuple[str, ...],
    imbalance: str,
    holdout: Sequence[str] | None,
    degraded: dict[str, datetime] | None,
    seed: int,
    label_holdout_after: int | None,
) -> Evaluation:
    ev = Evaluation(
        truth,
        label_budget,
        holdout=holdout,
        degraded=degraded,
        learner_factory=_learner_factory(models, imbalance, seed),
        label_holdout_after=label_holdout_after,
    )
    for event in sorted(events, key=lambda e: (e.ts, e.event_id)):
        ev.feed_event(event)
    return ev


def run_eval(
    readings_paths: Sequence[Path],
    truth_path: Path,
    label_budget: int = 10,
    models: Sequence[str] | None = None,
    holdout: Sequence[str] | None = None,
    degraded: dict[str, datetime] | None = None,
    settings: Settings | None = None,
    on_table: Callable[[str], None] | None = None,
    submeter_path: Path | None = None,
    energy_bin_s: int = 60,
    label_holdout_after: int | None = None,
) -> dict[str, Any]:
    """Figures for `nilm eval` (see CONTRACT.md), as one JSON-ready dict.

    `models` adds `"models": {name: {"macro_f1", "per_device", ...}}`, one run per name of
    `model_names()` (online) or of the batch models (`xgboost`, `cnn`, `lstm`, optionally
    `:IMBALANCE`), the batch ones retrained from the confirmations the online run had at each
    point of the stream; `on_table` receives their comparison table as text. `holdout` names
    devices the simulated user never labels (default: those first seen after the first third
    of the truth), and `label_holdout_after` lets it label them once that many of their events
    were seen (`Evaluation`); `degraded` maps devices to the time they start degrading (for the
    drift delay).
    `submeter_path` (each device's own power, `read_submeter`) adds `"energy"`: the share of
    energy correctly assigned and each device's energy error, in bins of `energy_bin_s`.
    """
    if models:
        _check_model_names(models)
    truth = read_truth_csv(Path(truth_path))
    batches = list(read_batches([Path(p) for p in readings_paths], settings))
    events = detect_events(batches, settings)
    log.info("eval: %s readings, %s events, %s truth events",
             sum(len(b) for b in batches), len(events), len(truth))  # fmt: skip
    submeter = read_submeter(Path(submeter_path)) if submeter_path is not None else None
    result = evaluate_events(
        events, truth, label_budget, holdout=holdout, degraded=degraded, submeter=submeter,
        energy_bin_s=energy_bin_s, label_holdout_after=label_holdout_after,
    )  # fmt: skip
    if models:
        from flows.batch_eval import batch_models_section, is_batch_model

        result["models"] = {}
        for name in [m for m in models if not is_batch_model(m)]:
            chosen, imbalance = _parse_model(name)
            r = evaluate_events(
                events, truth, label_budget, chosen, imbalance, holdout=holdout, degraded=degraded
            )
            result["models"][name] = {
                "macro_f1": r["classification"]["macro_f1"],
                "per_device": r["classification"]["per_device"],
                "novelty_roc_auc": r["novelty"]["roc_auc"],
            }
        batch_names = [m for m in models if is_batch_model(m)]
        if batch_names:
            section, table = batch_models_section(
                batches, events, truth, label_budget, batch_names, holdout=holdout,
                learner_factory=_learner_factory(DEFAULT_MODELS, "none", 0),
            )  # fmt: skip
            result["models"].update(section)
            if on_table is not None:
                on_table(table)
    return result
