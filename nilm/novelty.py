"""Novelty: does an event come from a device that the user has never confirmed?

Two views are combined. River's `HalfSpaceTrees` learns the density of every event's features
(scaled to [0, 1] by fixed physical limits), over a window counted in events: it says whether
such events are rare in this home. A memory of the confirmed events says how far the event is
from anything the user has labelled. An event is novel when it is both rare and far from every
label: a rarely used but labelled oven is not novel, and neither is a frequent fridge cycle
that simply has no label yet (that one is unknown, and the unknown-cluster step groups it).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from river import anomaly

from nilm.classification import weighted
from nilm.signatures import FEATURE_LIMITS

__all__ = ["NoveltyDetector", "NoveltyScore"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NoveltyScore:
    """`rarity` from the half-space trees, `label_distance` to the nearest confirmed event
    (weighted feature units; inf before any label), and their combination `novelty` in [0, 1]."""

    rarity: float
    label_distance: float
    novelty: float
    novel: bool


class NoveltyDetector:
    """Scores how new an event is, from its feature dict (`nilm.signatures.features`).

    Parameters
    ----------
    window_events
        HalfSpaceTrees' window, in events (it scores 0 until the first window has filled, so
        `rarity` is taken as 1 until then: everything is new in a new home). While
        `rarity_weight` is 0 the trees are grown only when `rarity` is asked for: the last
        three windows of events are kept instead and replayed then, which gives the same
        trees and scores (a window's masses depend on that window's events only). Growing 25
        trees takes about half a second and they pickle to most of a home's snapshot, which
        limited how many homes one core serves.
    n_trees, height
        HalfSpaceTrees' size.
    distance_scale
        The weighted feature distance at which an event counts as half-way unlike its nearest
        label (see `nilm.classification.FEATURE_WEIGHTS`; noise between events of one device is
        about 0.3-0.5).
    threshold
        `novelty` at or above which an event is flagged novel.
    max_labels_per_device
        How many confirmed events per device the distance memory keeps (the oldest go first).
    seed
        Seeds the trees.

    Examples
    --------
    >>> nd = NoveltyDetector(window_events=8, seed=1)
    >>> for i in range(20):
    ...     x = {"log_p": 2.1 + 0.001 * (i % 3), "on": 1.0}
    ...     nd.learn_one(x)
    ...     nd.learn_label(x, "fridge")
    >>> nd.score_one({"log_p": 2.101, "on": 1.0}).novel
    False
    >>> nd.score_one({"log_p": 3.6, "on": 1.0}).novel
    True

    References
    ----------
    Tan, S. C., Ting, K. M. and Liu, T. F. (2011). Fast anomaly detection for streaming data.
    IJCAI 2011.
    """

    def __init__(
        self,
        window_events: int = 250,
        n_trees: int = 25,
        height: int = 8,
        distance_scale: float = 2.5,
        threshold: float = 0.5,
        max_labels_per_device: int = 200,
        seed: int = 0,
        spread_prior: float = 0.5,
        spread_exponent: float = 0.5,
        rarity_weight: float = 0.0,
    ) -> None:
        self.window_events = window_events
        self.n_trees = n_trees
        self.height = height
        self.distance_scale = distance_scale
        self.threshold = threshold
        self.max_labels_per_device = max_labels_per_device
        self.seed = seed
        self.spread_prior = spread_prior
        self.spread_exponent = spread_exponent
        limits: dict[Hashable, tuple[float, float]] = {
            k: FEATURE_LIMITS[k] for k in DENSITY_FEATURES
        }
        self.trees: Any = anomaly.HalfSpaceTrees(
            n_trees=n_trees,
            height=height,
            window_size=window_events,
            limits=limits,
            seed=seed,
        )
        # Whether the trees have learned every event; until then `pending` holds the latest
        # events' density features (enough to grow the trees exactly, see `_grow_trees`).
        self.trees_grown = False
        self.pending: deque[tuple[float, ...]] = deque(maxlen=3 * window_events)
        self.n_learned = 0
        # The trees' raw scores of the last window of events: rarity is a rank among them, since
        # raw scores crowd into a narrow band whose place depends on the home.
        self.recent_scores: deque[float] = deque(maxlen=window_events)
        self.rarity_weight = rarity_weight
        # Per device, its confirmed events (weighted features, in `keys` order) and its spread.
        self.keys: list[str] = []
        self.labelled: dict[str, npt.NDArray[np.float64]] = {}
        self.spread: dict[str, float] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # snapshots from before lazy trees fed the trees every event
        self.__dict__.setdefault("trees_grown", True)
        self.__dict__.setdefault("pending", deque(maxlen=3 * self.window_events))

    def clone(self) -> NoveltyDetector:
        return NoveltyDetector(
            self.window_events,
            self.n_trees,
            self.height,
            self.distance_scale,
            self.threshold,
            self.max_labels_per_device,
            self.seed,
            self.spread_prior,
            self.spread_exponent,
            self.rarity_weight,
        )

    def learn_one(self, x: dict[str, float]) -> None:
        """Add an event to the density (every event, labelled or not)."""
        z = _inside(x)
        if self.trees_grown or self.rarity_weight != 0:
            self._grow_trees()
            self._learn_trees(z)
        else:
            self.pending.append(tuple(z[k] for k in DENSITY_FEATURES))
            self.n_learned += 1

    def _learn_trees(self, z: dict[str, float]) -> None:
        if self.n_learned >= self.window_events:
            self.recent_scores.append(float(self.trees.score_one(z)))
        self.trees.learn_one(z)
        self.n_learned += 1

    def _grow_trees(self) -> None:
        """Feed the trees the pending events, as if they had learned every event.

        A window's masses are its own events' counts, and the last window's scores were taken
        against the window before theirs: so replaying from the start of the window before
        that (at most three windows back, window-aligned) gives the same trees and scores.
        """
        if self.trees_grown:
            return
        w, n = self.window_events, self.n_learned
        start = max(0, ((n - w) // w - 1) * w)
        events = list(self.pending)[len(self.pending) - (n - start) :]
        self.n_learned = start
        for values in events:
            z = dict(zip(DENSITY_FEATURES, values, strict=True))
            if self.n_learned >= start + w:  # the trees have a reference window
                self._learn_trees(z)
            else:
                self.trees.learn_one(z)
                self.n_learned += 1
        self.pending.clear()
        self.trees_grown = True

    def learn_label(self, x: dict[str, float], device: str) -> None:
        """Remember a confirmed event of `device`, and re-measure that device's spread."""
        wx = weighted(x)
        if not self.keys:
            self.keys = sorted(wx)
        row = np.array([[wx.get(k, 0.0) for k in self.keys]], dtype=np.float64)
        memory = self.labelled.get(device)
        memory = row if memory is None else np.vstack([memory, row])[-self.max_labels_per_device :]
        self.labelled[device] = memory
        self.spread[device] = _spread(memory, self.spread_prior)

    def forget_labels(self) -> None:
        """Forget every confirmed event (the density of all events stays)."""
        self.labelled = {}
        self.spread = {}

    def rarity(self, x: dict[str, float]) -> float:
        """The rank of HalfSpaceTrees' anomaly score among the last window's events, in [0, 1].

        1 until the trees' first window has filled (everything is new in a new home).
        """
        if self.n_learned < self.window_events:
            return 1.0
        self._grow_trees()
        if not self.recent_scores:
            return 1.0
        raw = float(self.trees.score_one(_inside(x)))
        below = sum(1 for r in self.recent_scores if r < raw)
        ties = sum(1 for r in self.recent_scores if r == raw)
        return (below + 0.5 * ties) / len(self.recent_scores)

    def device_distances(self, x: dict[str, float]) -> dict[str, float]:
        """Per learned device, the distance to its nearest confirmed event in units of that
        device's own spread: 1 is as far as its events typically lie from one another."""
        if not self.labelled:
            return {}
        wx = weighted(x)
        row = np.array([wx.get(k, 0.0) for k in self.keys], dtype=np.float64)
        out = {}
        for name in sorted(self.labelled):
            nearest = float(np.sqrt(((self.labelled[name] - row) ** 2).sum(axis=1)).min())
            out[name] = nearest / self.spread[name] ** self.spread_exponent
        return out

    def label_distance(self, x: dict[str, float]) -> tuple[float, str | None]:
        """The smallest spread-scaled distance to a learned device (inf before any label), and
        that device."""
        distances = self.device_distances(x)
        if not distances:
            return math.inf, None
        device = min(sorted(distances), key=lambda d: distances[d])
        return distances[device], device

    def score_one(self, x: dict[str, float]) -> NoveltyScore:
        """How new `x` is (`rarity` is nan while `rarity_weight` is 0: not consulted); changes
        nothing the scores depend on."""
        rarity = self.rarity(x) if self.rarity_weight != 0 else math.nan
        distance, _ = self.label_distance(x)
        far = 1.0
        if not math.isinf(distance):
            far = 1.0 - 2.0 ** (-((distance / self.distance_scale) ** 2))
        novelty = far if self.rarity_weight == 0 else far * max(rarity, 0.0) ** self.rarity_weight
        return NoveltyScore(rarity, distance, novelty, novelty >= self.threshold)


def _spread(memory: npt.NDArray[np.float64], prior: float, prior_weight: float = 3.0) -> float:
    """How far a device's confirmed events typically lie from their nearest neighbour among
    themselves (the median), shrunk towards `prior` while it has few: one or two labels say
    little about how much a device varies. Never below a tenth of the prior, so that a device
    whose labels happen to coincide does not call its next event new."""
    n = len(memory)
    if n >= 2:
        diff = memory[:, None, :] - memory[None, :, :]
        d = np.sqrt((diff**2).sum(axis=2))
        np.fill_diagonal(d, np.inf)
        typical = float(np.median(d.min(axis=1)))
    else:
        typical = prior
    shrunk = math.sqrt((prior_weight * prior**2 + n * typical**2) / (prior_weight + n))
    return max(shrunk, 0.1 * prior)


# What the trees split on: what tells devices apart. Time of day, run length and settling are
# left out: they vary within a device, and every split spent on them is lost for the rest.
DENSITY_FEATURES = ("on", "log_p", "q_ratio", "leg_a", "leg_b", "leg_ab", "inrush", "ramp")


def _inside(x: dict[str, float]) -> dict[str, float]:
    """The density features, clipped into their limits."""
    out = {}
    for k in DENSITY_FEATURES:
        lo, hi = FEATURE_LIMITS[k]
        out[k] = min(max(x.get(k, 0.0), lo), hi)
    return out
