"""Contract checks on every detector and model, in the style of River's `utils.estimator_checks`.

Each case says how to build the object, how to teach it a stream and how to ask it something.
Every object must: store each `__init__` argument under its own name (so it can be rebuilt, as
River's `clone` does), survive a pickle round trip mid-stream (Bytewax snapshots), answer without
changing (predictions are pure), and give the same answers for the same seed and stream.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from nilm.bocpd import BOCPD
from nilm.changepoint import DerivativeDetector
from nilm.classification import CLASSIFIERS, IMBALANCE, DeviceClassifier, PrequentialSelector
from nilm.clustering import UnknownClusters
from nilm.cusum import Cusum
from nilm.detection import HomeEventDetector
from nilm.health import HealthMonitor, MetricWatch
from nilm.learning import HomeLearner
from nilm.novelty import NoveltyDetector
from nilm.pairing import Pairer
from nilm.records import Event, Label, ReadingBatch
from nilm.simulator import HouseholdSimulator, SimulatorConfig
from tests.nilm.test_learning import make_event

T0 = datetime(2026, 1, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """How to check one estimator: build it, feed item i of its stream, ask it something."""

    name: str
    build: Callable[[int], Any]
    learn: Callable[[Any, int], Any]
    ask: Callable[[Any], Any]
    n: int = 40


def _x(i: int) -> dict[str, float]:
    k = i % 3
    return {"log_p": 2.1 + 0.7 * k + 0.003 * (i % 5), "on": float(i % 2), "q_ratio": 0.2 * k}


def _device(i: int) -> str:
    return ["fridge", "microwave", "heater"][i % 3]


PROBES = [_x(i) | {"log_p": _x(i)["log_p"] + 0.01} for i in range(6)]


def _events(i: int) -> Event:
    device = ["fridge", "heater", "microwave"][i % 3]
    return make_event(device, 7 * i, on=(i // 3) % 2 == 0, jitter=0.004 * (i % 4))


_SIM_BATCHES = [b for b, _ in HouseholdSimulator(SimulatorConfig(seed=2)).iter_batches(0.02, 300)]


def _power(i: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    level = 100.0 + 400.0 * ((i // 2) % 2)
    return level + rng.normal(0, 2.0, (2, 50))


def _learner_step(learner: HomeLearner, i: int) -> Any:
    e = _events(i)
    rows = learner.on_event(e)
    if i % 4 == 0:
        rows += learner.on_label(Label(i + 1, "h", e.event_id, _device(i), T0))
    return rows


CASES = [
    *[
        Case(
            f"classifier-{m}",
            lambda seed, m=m: DeviceClassifier(m, "none", seed),
            lambda est, i: est.learn_one(_x(i), _device(i)),
            lambda est: [est.predict_proba_one(x) for x in PROBES],
        )
        for m in CLASSIFIERS
    ],
    *[
        Case(
            f"imbalance-{s}",
            lambda seed, s=s: DeviceClassifier("knn", s, seed),
            lambda est, i: est.learn_one(_x(i), _device(i) if i % 5 else "rare"),
            lambda est: [est.predict_proba_one(x) for x in PROBES],
        )
        for s in IMBALANCE
    ],
    Case(
        "prequential-selector",
        lambda seed: PrequentialSelector(("knn", "hoeffding"), "none", seed),
        lambda est, i: est.learn_one(_x(i), _device(i)),
        lambda est: ([est.predict_one(x) for x in PROBES], est.best),
    ),
    Case(
        "novelty",
        lambda seed: NoveltyDetector(window_events=10, seed=seed),
        lambda est, i: (est.learn_one(_x(i)), i % 3 or est.learn_label(_x(i), _device(i))),
        lambda est: [est.score_one(x) for x in [*PROBES, {"log_p": 4.0}]],
    ),
    Case(
        "unknown-clusters",
        lambda seed: UnknownClusters("h"),
        lambda est, i: est.learn_one(_x(i), _events(i)).cluster_id,
        lambda est: sorted((c.cluster_id, c.n_events) for c in est.registry.values()),
    ),
    Case(
        "metric-watch",
        lambda seed: MetricWatch("delta_p_w", min_samples=10),
        lambda est, i: est.update(T0 + timedelta(hours=i), 100.0 + (i % 3) + 30.0 * (i > 25)),
        lambda est: (list(est.values), est.baseline),
    ),
    Case(
        "health-monitor",
        lambda seed: HealthMonitor("h", min_samples=10),
        lambda est, i: est.on_event("fridge", _events(3 * (i // 3))),
        lambda est: sorted((k, list(w.values)) for k, w in est.watches.items()),
    ),
    Case(
        "pairer",
        lambda seed: Pairer(),
        lambda est, i: est.on_event(_events(i), None),
        lambda est: [est.match(_events(i), None) for i in range(3, 6)],
    ),
    Case(
        "home-learner",
        lambda seed: HomeLearner("h", seed=seed),
        _learner_step,
        lambda est: (est.uncertainty_queue(), est.classifier.predict_proba_one(_x(1))),
        n=30,
    ),
    *[
        Case(
            f"home-event-detector-{kind}",
            lambda seed, kind=kind: HomeEventDetector("home", detector=kind),
            lambda est, i: est.update(_SIM_BATCHES[i]),
            # A detector answers only through update: an empty batch must leave it as it was.
            lambda est: est.update(ReadingBatch.empty("home")),
            n=len(_SIM_BATCHES),
        )
        for kind in ("bocpd", "cusum", "derivative")
    ],
    Case(
        "bocpd",
        lambda seed: BOCPD(channels=2, max_run=60),
        lambda est, i: [a.tolist() for a in est.update(_power(i))],
        lambda est: est.posterior(0).tolist(),
        n=8,
    ),
    Case(
        "cusum",
        lambda seed: Cusum(channels=2),
        lambda est, i: [a.tolist() for a in est.update(_power(i))],
        lambda est: est.lag,
        n=8,
    ),
    Case(
        "derivative",
        lambda seed: DerivativeDetector(channels=2),
        lambda est, i: [a.tolist() for a in est.update(_power(i))],
        lambda est: est.lag,
        n=8,
    ),
]


def _run(est: Any, case: Case, lo: int, hi: int) -> list[Any]:
    return [case.learn(est, i) for i in range(lo, hi)]


def _same(a: Any, b: Any) -> bool:
    """Equal values; equal pickles for objects without equality (answers are plain data)."""
    return bool(a == b) or pickle.dumps(a) == pickle.dumps(b)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_init_arguments_are_stored_under_their_names_so_it_clones(case: Case) -> None:
    est = case.build(7)
    params = inspect.signature(type(est).__init__).parameters
    names = [p for p in params if p != "self"]
    for name in names:
        assert hasattr(est, name), f"{type(est).__name__} does not keep {name!r}"
    _run(est, case, 0, case.n // 2)
    clone = type(est)(**{name: getattr(est, name) for name in names})
    fresh = case.build(7)
    # The clone starts afresh: it learns the stream exactly as a new object does.
    assert _same(_run(clone, case, 0, case.n), _run(fresh, case, 0, case.n))
    assert _same(case.ask(clone), case.ask(fresh))
    if hasattr(est, "clone"):
        assert _same(_run(est.clone(), case, 0, case.n), _run(case.build(7), case, 0, case.n))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_a_pickle_round_trip_mid_stream_changes_nothing(case: Case) -> None:
    est = case.build(1)
    _run(est, case, 0, case.n // 2)
    restored = pickle.loads(pickle.dumps(est))
    assert _same(_run(restored, case, case.n // 2, case.n), _run(est, case, case.n // 2, case.n))
    assert _same(case.ask(restored), case.ask(est))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_asking_changes_nothing(case: Case) -> None:
    est = case.build(2)
    _run(est, case, 0, case.n)
    before = pickle.dumps(est)
    first = case.ask(est)
    assert pickle.dumps(est) == before
    assert _same(case.ask(est), first)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_same_seed_and_stream_give_the_same_answers(case: Case) -> None:
    a, b = case.build(3), case.build(3)
    assert _same(_run(a, case, 0, case.n), _run(b, case, 0, case.n))
    assert _same(case.ask(a), case.ask(b))
