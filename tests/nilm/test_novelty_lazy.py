"""HalfSpaceTrees grown only when rarity is asked for: the same trees and scores as trees that
learned every event, at a fraction of the snapshot."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from nilm.novelty import NoveltyDetector


def _events(n: int, seed: int) -> list[dict[str, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        device = int(rng.integers(0, 4))
        out.append({
            "on": float(rng.random() < 0.5),
            "log_p": 1.5 + 0.6 * device + 0.02 * float(rng.normal()),
            "q_ratio": 0.1 * device + 0.01 * float(rng.normal()),
            "leg_a": float(device % 2), "leg_b": float(1 - device % 2), "leg_ab": 0.0,
            "inrush": 0.2 * float(rng.random()), "ramp": 0.0,
        })  # fmt: skip
    return out


@pytest.mark.parametrize("n", [5, 20, 33, 47, 64, 100])
def test_lazy_trees_score_as_trees_that_learned_every_event(n: int) -> None:
    window = 16
    lazy = NoveltyDetector(window_events=window, n_trees=5, height=5, seed=3)
    # any rarity weight feeds the trees every event, as before
    eager = NoveltyDetector(window_events=window, n_trees=5, height=5, seed=3, rarity_weight=1.0)
    events = _events(n, seed=n)
    for x in events:
        lazy.learn_one(x)
        eager.learn_one(x)
    assert not lazy.trees_grown and eager.trees_grown
    probes = _events(10, seed=1000 + n)
    assert [lazy.rarity(x) for x in probes] == [eager.rarity(x) for x in probes]
    assert lazy.trees_grown == (n >= window)  # before a full window, rarity is 1: no trees
    lazy._grow_trees()
    assert list(lazy.recent_scores) == list(eager.recent_scores)
    more = _events(40, seed=2000 + n)  # and they stay equal as both go on learning
    for x in more:
        lazy.learn_one(x)
        eager.learn_one(x)
    assert [lazy.rarity(x) for x in probes] == [eager.rarity(x) for x in probes]


def test_lazy_novelty_is_the_same_and_pickles_small() -> None:
    lazy = NoveltyDetector(window_events=50, seed=0)
    eager = NoveltyDetector(window_events=50, seed=0)
    eager._grow_trees()  # the trees as before: fed every event
    for i, x in enumerate(_events(300, seed=7)):
        lazy.learn_one(x)
        eager.learn_one(x)
        if i % 7 == 0:
            lazy.learn_label(x, f"d{i % 3}")
            eager.learn_label(x, f"d{i % 3}")
    for x in _events(20, seed=8):
        a, b = lazy.score_one(x), eager.score_one(x)
        assert (a.novelty, a.novel, a.label_distance) == (b.novelty, b.novel, b.label_distance)
        assert math.isnan(a.rarity)
    assert not lazy.trees_grown
    small, large = len(pickle.dumps(lazy)), len(pickle.dumps(eager))
    assert small * 5 < large, (small, large)
    restored = pickle.loads(pickle.dumps(lazy))
    probe = _events(1, seed=9)[0]
    assert restored.rarity(probe) == eager.rarity(probe)
