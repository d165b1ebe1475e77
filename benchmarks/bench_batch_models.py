"""Batch models beside the online learner: two simulated weeks, 10 and 50 labels per device.

For each label budget: the household simulator's readings run through the flow's detector and
the online evaluation (`nilm.evaluation`, whose simulated user confirms the most uncertain events
every hour, at most BUDGET per device); then XGBoost, the CNN and the LSTM, with each imbalance
option, are retrained every 6 hours of stream time from the confirmations given so far, and
scored on the same events as the online learner (known device, not confirmed, not held out).

Columns: macro-F1 over the two weeks; `late`, over the second week only (most labels are in by
then); total and last training time (s); prediction time per event (µs, batched between
retrains; the online rows have none of their own here); then each device's F1.

Run: `.venv/bin/python benchmarks/bench_batch_models.py [--days 14] [--budgets 10,50]`.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import torch

from flows.batch_eval import (
    LabelledStream,
    batch_specs,
    event_windows,
    labelled_stream,
    run_batch_models,
)
from nilm.batch.compare import format_table
from nilm.batch.model import EventSamples, make_model
from nilm.batch.served import ServedModel, save_model
from nilm.batch.windows import EventWindow, window_features
from nilm.detection import HomeEventDetector
from nilm.simulator import HouseholdSimulator, SimulatorConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--budgets", default="10,50")
    parser.add_argument("--models", default="xgboost,cnn,lstm")
    parser.add_argument("--retrain-hours", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="two simulated days, 10 labels, XGBoost only"
    )
    args = parser.parse_args()
    if args.quick:
        args.days, args.budgets, args.models = min(args.days, 2.0), "10", "xgboost"
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    sim = HouseholdSimulator(SimulatorConfig(seed=args.seed))
    batches, truth = [], []
    for batch, day_truth in sim.iter_batches(args.days, batch_s=3600):
        batches.append(batch)
        truth += day_truth
    detector = HomeEventDetector("home")
    events = [e for b in batches for e in detector.update(b)] + detector.flush()
    print(
        f"# {args.days:g} simulated days (seed {args.seed}): {sum(len(b) for b in batches)} "
        f"readings, {len(truth)} true switches, {len(events)} detected events "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    windows = event_windows(batches, events)
    specs = batch_specs(args.models.split(","))
    for budget in (int(b) for b in args.budgets.split(",")):
        t1 = time.perf_counter()
        stream = labelled_stream(events, truth, budget, seed=args.seed)
        online = stream.online_result["classification"]
        results = run_batch_models(stream, windows, specs, args.retrain_hours * 3600.0, args.seed)
        scored = results[0].scored
        print(
            f"\n## budget {budget} labels per device: {len(stream.confirmations)} confirmations, "
            f"{scored} events scored (online evaluation scored {online['n_scored']}), "
            f"held out: {stream.online_result['novelty']['holdout']}, "
            f"retrain every {args.retrain_hours:g} h ({time.perf_counter() - t1:.0f} s)"
        )
        print(format_table(results))
        serving(stream, windows, 100 if args.quick else 300)


def serving(stream: LabelledStream, windows: list[EventWindow], n: int = 300) -> None:
    """Per-event latency of each kind served from a file over the online feature dict."""
    by_id = {w.event_id: w for w in windows}
    names = sorted({k for x in stream.features for k in x})
    rows = {e.event_id: i for i, e in enumerate(stream.events)}
    confs = [c for c in stream.confirmations if c.event_id in rows]
    samples = EventSamples.from_dicts(
        [stream.features[rows[c.event_id]] for c in confs],
        [by_id[c.event_id].values for c in confs],
        names,
    )
    queries = [
        stream.features[i] | window_features(by_id[e.event_id])
        for i, e in enumerate(stream.events[:n])
    ]
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("xgboost", "cnn", "lstm"):
            path = save_model(
                make_model(kind).fit(samples, [c.device for c in confs]),
                Path(tmp) / f"{kind}.model",
            )
            served = ServedModel(path)
            t0 = time.perf_counter()
            for x in queries:
                served.predict_proba_one(x)
            per_event = (time.perf_counter() - t0) / len(queries) * 1e6
            t0 = time.perf_counter()
            served.stamp = None
            served.reload()
            reload_ms = (time.perf_counter() - t0) * 1e3
            cells.append(
                f"{kind} {per_event:.0f} µs/event (reload {reload_ms:.1f} ms, "
                f"{path.stat().st_size / 1024:.0f} KiB)"
            )
    print("served from a file, one event at a time: " + "; ".join(cells))


if __name__ == "__main__":
    main()
