"""Online learning on two simulated weeks: classifiers x imbalance strategies, novelty, health.

Prints the figures the online-learning issue asks for, on a seed the tests do not use:

1. classification macro-F1 (prequential, events the simulated user did not label, 10 labels
   per device in the active-learning order) for every River classifier and imbalance strategy,
   and for the flow's prequential selector;
2. novelty: a well pump introduced on day 7 and never labelled, flagged on its first 10 events,
   against the rate on known devices' events, and the ROC AUC;
3. health: a fridge whose power and run time grow 25 % over week 2 (and, as a second case,
   within its first day), delay of the first alert from the onset; false alarms on a healthy
   home; ADWIN against PageHinkley; then the ADWIN delay and false alarms over more seeds.

Run: `.venv/bin/python benchmarks/bench_learning.py [--seed S] [--days D] [--quick]`.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.eval import DEFAULT_MODELS, detect_events
from nilm.classification import CLASSIFIERS, IMBALANCE
from nilm.evaluation import Evaluation
from nilm.health import HealthMonitor
from nilm.learning import HomeLearner
from nilm.records import Event, TruthEvent
from nilm.settings import Settings
from nilm.simulator import HouseholdSimulator, SimulatorConfig


def simulate(config: SimulatorConfig, days: float) -> tuple[list[Event], list[TruthEvent], float]:
    t0 = time.perf_counter()
    batches, truth = [], []
    for batch, events in HouseholdSimulator(config).iter_batches(days, 3600):
        batches.append(batch)
        truth += events
    events = detect_events(batches, Settings())
    return events, truth, time.perf_counter() - t0


def evaluate(
    events: list[Event],
    truth: list[TruthEvent],
    budget: int,
    learner: Any,
    holdout: list[str],
    degraded: dict | None = None,
) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    ev = Evaluation(truth, budget, holdout=holdout, degraded=degraded, learner_factory=learner)
    for e in sorted(events, key=lambda e: (e.ts, e.event_id)):
        ev.feed_event(e)
    result = ev.result()
    result["_learner"] = next(iter(ev.learners.values()))
    return result, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--days", type=float, default=14.0)
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: knn, two imbalance options, 2 simulated days, one health case",
    )
    parser.add_argument(
        "--health-seeds",
        type=int,
        default=4,
        help="more seeds for the health delay and false alarms (ADWIN)",
    )
    args = parser.parse_args()
    if args.quick:
        args.days, args.health_seeds = min(args.days, 2.0), 0
    seed, days, budget = args.seed, args.days, args.budget
    week2 = int(days // 2)
    print(f"# bench_learning: seed {seed}, {days:g} simulated days, {budget} labels per device\n")

    novel = SimulatorConfig(seed=seed, novel_device="well_pump", novel_from_day=week2)
    events, truth, dt = simulate(novel, days)
    print(f"novel-device home: {len(events)} events detected, {len(truth)} true, {dt:.1f} s\n")

    # 1. classifiers x imbalance strategies
    models = ["knn"] if args.quick else list(CLASSIFIERS)
    strategies = IMBALANCE[:2] if args.quick else IMBALANCE
    print("## classification macro-F1 (prequential, unlabelled events of known devices)")
    print(f"{'classifier':<14}" + "".join(f"{s:>13}" for s in strategies) + f"{'s/run':>8}")
    table: dict[tuple[str, str], float] = {}
    for m in models:
        cells, spent = [], 0.0
        for s in strategies:

            def build(h: str, m: str = m, s: str = s) -> HomeLearner:
                return HomeLearner(h, models=(m,), imbalance=s, seed=seed)

            r, t = evaluate(events, truth, budget, build, ["well_pump"])
            table[(m, s)] = r["classification"]["macro_f1"]
            cells.append(f"{table[(m, s)]:>13.4f}")
            spent += t
        print(f"{m:<14}" + "".join(cells) + f"{spent / len(strategies):>8.1f}")
    best = max(table, key=lambda k: table[k])
    for s in strategies[1:]:
        gains = [table[(m, s)] - table[(m, "none")] for m in models]
        print(f"  {s:<12} vs none: mean {sum(gains) / len(gains):+.4f}, "
              f"best {max(gains):+.4f}, worst {min(gains):+.4f}")  # fmt: skip
    print(f"  best pair: {best[0]} + {best[1]} = {table[best]:.4f}")

    def flow_learner(h: str) -> HomeLearner:
        return HomeLearner(h, models=DEFAULT_MODELS, seed=seed)

    r, t = evaluate(events, truth, budget, flow_learner, ["well_pump"])
    sel = r["_learner"].classifier
    print(f"\nflow pipeline (prequential selection among {', '.join(DEFAULT_MODELS)}): "
          f"macro-F1 {r['classification']['macro_f1']:.4f}, selected {sel.best}, "
          f"on labels {({k: round(v, 3) for k, v in sel.report().items()})}, "
          f"{t:.1f} s")  # fmt: skip
    print("per device:", r["classification"]["per_device"])
    print(f"events: {r['events']}; labels spent: {r['labels']}")
    cal = r["calibration"]
    print(f"calibration: ECE {cal['ece']} over {cal['n_predictions']} answers, mean confidence "
          f"{cal['mean_confidence']}, accuracy {cal['accuracy']}")  # fmt: skip
    snapshot_kb = len(pickle.dumps(r["_learner"], protocol=pickle.HIGHEST_PROTOCOL)) / 1024
    print(f"learner snapshot after {days:g} days: {snapshot_kb:.0f} kB")

    # 2. novelty
    nov = r["novelty"]
    print("\n## novelty (well_pump from day", week2, "never labelled)")
    print(f"first 10 events flagged novel: {nov['holdout_first10_flagged']}")
    print(f"known-device events flagged novel (after the device's first label): "
          f"{nov['known_flagged_rate']}")  # fmt: skip
    print(f"ROC AUC held-out vs known: {nov['roc_auc']}")
    goals = [
        ("novelty ROC AUC >= 0.95", (nov["roc_auc"] or 0.0) >= 0.95),
        ("known devices' events flagged <= 5 %", (nov["known_flagged_rate"] or 0.0) <= 0.05),
        ("calibration ECE <= 0.10", cal["ece"] is not None and cal["ece"] <= 0.10),
        ("learner snapshot <= 8 MB", snapshot_kb <= 8 * 1024),
    ]
    for goal, met in goals:
        print(f"goal {goal}: {'met' if met else 'MISSED'}")
    clusters = r["_learner"].clusters.registry.values()
    big = sorted(clusters, key=lambda c: -c.n_events)[:3]
    shown = [(c.cluster_id, c.n_events, round(c.typical_delta_p_w), c.legs) for c in big]
    print("largest unknown-device clusters (id, events, |step| W, legs):", shown)

    # 3. health
    print("\n## health (fridge power and run time +25 % from day", week2, ")")
    print(f"{'case':<34}{'detector':>14}{'delay_h':>9}{'false':>7}  first alert")
    cases = [
        ("healthy home", SimulatorConfig(seed=seed), None),
        ("fridge +25 % over week 2", SimulatorConfig(
            seed=seed, degrade_device="fridge", degrade_from_day=week2), 7.0),
        ("fridge +25 % within a day", SimulatorConfig(
            seed=seed, degrade_device="fridge", degrade_from_day=week2, degrade_ramp_days=1.0),
         1.0),
    ]  # fmt: skip
    detectors = ("adwin",) if args.quick else ("adwin", "page_hinkley")
    if args.quick:
        cases = cases[2:]
    for name, config, _ramp in cases:
        ev_h, tr_h, _ = simulate(config, days)
        onset = config.start + timedelta(days=week2)
        degraded = {"fridge": onset} if config.degrade_device else {}
        for detector in detectors:

            def health_learner(h: str, detector: str = detector) -> HomeLearner:
                learner = HomeLearner(h, seed=seed)
                learner.health = HealthMonitor(h, detector=detector)
                return learner

            rh, _ = evaluate(ev_h, tr_h, budget, health_learner, [], degraded)
            drift = rh["drift"]
            delay = drift["delay_h"].get("fridge")
            first = (drift.get("first_alert") or {}).get("fridge") or (drift["messages"] or [""])[0]
            print(f"{name:<34}{detector:>14}{delay if delay is not None else '-':>9}"
                  f"{drift['false_alarms']:>7}  {first}")  # fmt: skip
    if args.health_seeds:
        health_over_seeds(seed, args.health_seeds, days, budget)
    if not all(met for _, met in goals):
        sys.exit(1)


def health_over_seeds(first_seed: int, n: int, days: float, budget: int) -> None:
    """The ADWIN health figures over more seeds: delay spread and false alarms."""
    week2 = int(days // 2)
    seeds = f"{first_seed + 1}..{first_seed + n}"
    print(f"\n## health over seeds {seeds} (ADWIN, fridge ramp over week 2)")
    print(f"{'seed':>6}{'delay_h':>9}{'false (degraded home)':>23}{'false (healthy home)':>22}")
    delays = []
    for seed in range(first_seed + 1, first_seed + n + 1):
        row = []
        for config in (
            SimulatorConfig(seed=seed, degrade_device="fridge", degrade_from_day=week2),
            SimulatorConfig(seed=seed),
        ):
            ev_h, tr_h, _ = simulate(config, days)
            onset = config.start + timedelta(days=week2)
            degraded = {"fridge": onset} if config.degrade_device else {}
            rh, _ = evaluate(ev_h, tr_h, budget, HomeLearner, [], degraded)
            row.append(rh["drift"])
        delay = row[0]["delay_h"].get("fridge")
        delays.append(delay)
        print(f"{seed:>6}{delay if delay is not None else '-':>9}"
              f"{row[0]['false_alarms']:>23}{row[1]['false_alarms']:>22}")  # fmt: skip
    found = sorted(d for d in delays if d is not None)
    if found:
        within = sum(d <= 24 for d in found)
        print(f"  median delay {found[len(found) // 2]:.1f} h; within 24 h: {within}/{len(delays)}")


if __name__ == "__main__":
    main()
