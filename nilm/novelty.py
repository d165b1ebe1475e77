"""Novelty: does an event come from a device that the user has never confirmed?

An event is judged against each device learned so far, on that device's own terms: the distance
to the device's nearest confirmed event, relative to how far that device's confirmed events lie
from one another, both as a whole (one spread per device) and feature by feature (a printer whose
labels spread over several power levels but never change their reactive share is still far from
a washer motor of the same power with another one). The event is novel when it is far from every
device. River's `HalfSpaceTrees` can also weigh in, with a density of all events (rare in this
home or not), but by default it does not (`rarity_weight` 0): the question is whether the user has
taught the device, not whether it is frequent, and a density that learns every event soon finds
a new device's repeated events ordinary (see `NoveltyDetector`).
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

from nilm.classification import FEATURE_WEIGHTS, weighted
from nilm.signatures import FEATURE_LIMITS

__all__ = ["NoveltyDetector", "NoveltyScore"]

# Device names, their labels' rows, where each device's rows start, each device's spread to the
# power `spread_exponent`, and each row's per-feature spread (`NoveltyDetector._stacked`).
_Stack = tuple[
    list[str],
    npt.NDArray[np.float64],
    npt.NDArray[np.intp],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
]

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
    spread_prior, spread_exponent
        A device's spread is shrunk towards `spread_prior` while it has few labels; the distance
        is divided by the spread to the power `spread_exponent`.
    rarity_weight
        How much the trees' rarity counts (`novelty = far * rarity ** rarity_weight`). 0 by
        default: on the simulator's three seeds and ANTgen h1-h4 (10 labels per device), 0.5
        lowered novelty ROC AUC on six of the seven (0.969 -> 0.937, 0.961 -> 0.918 on the
        simulator; raised it only on seed 3, 0.84 -> 0.88), and the trees cost half a second
        to grow and most of a home's snapshot.
    distance_ignores
        Features the distance leaves out (None: `DISTANCE_IGNORES`, when and how it settles).
    per_feature
        Whether the distance is also measured feature by feature, in units of the device's own
        spread of each feature (never below `NOISE_FLOOR`); the two views are combined by their
        geometric mean.
    feature_scale
        The per-feature distance at which an event counts as half-way unlike its nearest label.

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
        distance_ignores: tuple[str, ...] | None = None,
        per_feature: bool = True,
        feature_scale: float = 3.0,
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
        self.distance_ignores = (
            DISTANCE_IGNORES if distance_ignores is None else tuple(distance_ignores)
        )
        self.per_feature = per_feature
        self.feature_scale = feature_scale
        # Per device, the typical deviation of each feature among its confirmed events.
        self.feature_spread: dict[str, npt.NDArray[np.float64]] = {}
        # The labels stacked for scoring (`_stacked`), rebuilt after a label; not pickled.
        self._stack: _Stack | None = None
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

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_stack"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        # snapshots from before lazy trees fed the trees every event
        self.__dict__.setdefault("trees_grown", True)
        self.__dict__.setdefault("pending", deque(maxlen=3 * self.window_events))
        # snapshots from before per-feature spreads judge as they did (their `keys` were built
        # with every feature)
        self.__dict__.setdefault("distance_ignores", ())
        self.__dict__.setdefault("per_feature", False)
        self.__dict__.setdefault("feature_scale", 3.0)
        self.__dict__.setdefault("feature_spread", {})
        self.__dict__.setdefault("_stack", None)

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
            self.distance_ignores,
            self.per_feature,
            self.feature_scale,
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
            self.keys = sorted(k for k in wx if k not in self.distance_ignores)
        row = np.array([[wx.get(k, 0.0) for k in self.keys]], dtype=np.float64)
        memory = self.labelled.get(device)
        memory = row if memory is None else np.vstack([memory, row])[-self.max_labels_per_device :]
        self.labelled[device] = memory
        self.spread[device] = _spread(memory, self.spread_prior)
        self.feature_spread[device] = _feature_spread(memory, self._noise_floor())
        self._stack = None

    def _noise_floor(self) -> npt.NDArray[np.float64]:
        """Per feature (in `keys` order, weighted units), the least spread a device may have."""
        return np.array([NOISE_FLOOR.get(k, 0.1) * FEATURE_WEIGHTS.get(k, 1.0) for k in self.keys])

    def forget_labels(self) -> None:
        """Forget every confirmed event (the density of all events stays)."""
        self.labelled = {}
        self.spread = {}
        self.feature_spread = {}
        self._stack = None

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
        names, rows, starts, scale, feature_spread = self._stacked()
        diff = rows - row
        for k in ONE_SIDED:
            if k in self.keys:
                # less than a label showed is no sign of another device (see ONE_SIDED)
                i = self.keys.index(k)
                diff[:, i] = np.minimum(diff[:, i], 0.0)
        nearest = np.minimum.reduceat(np.sqrt((diff**2).sum(axis=1)), starts) / scale
        if self.per_feature:
            per = np.minimum.reduceat(np.sqrt(((diff / feature_spread) ** 2).sum(axis=1)), starts)
            # in `distance_scale` units, so that both views count alike
            nearest = np.sqrt(nearest * per * self.distance_scale / self.feature_scale)
        return {name: float(nearest[i]) for i, name in enumerate(names)}

    def _stacked(self) -> _Stack:
        """Every device's confirmed events in one matrix (devices in name order), where each
        device's rows start, each device's spread to the power `spread_exponent`, and each
        row's per-feature spread: one pass of numpy per event instead of one per device."""
        if self._stack is None:
            names = sorted(self.labelled)
            rows = np.vstack([self.labelled[n] for n in names])
            sizes = [len(self.labelled[n]) for n in names]
            starts = np.cumsum([0, *sizes[:-1]]).astype(np.intp)
            scale = np.array([self.spread[n] ** self.spread_exponent for n in names])
            feature_spread = (
                np.vstack([np.tile(self.feature_spread[n], (len(self.labelled[n]), 1))
                           for n in names])
                if self.per_feature
                else np.ones_like(rows)
            )  # fmt: skip
            self._stack = (names, rows, starts, scale, feature_spread)
        return self._stack

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


def _feature_spread(
    memory: npt.NDArray[np.float64], floor: npt.NDArray[np.float64], prior_weight: float = 3.0
) -> npt.NDArray[np.float64]:
    """Per feature, how far a device's confirmed events lie from their nearest neighbour among
    themselves (root mean square over the events), shrunk towards `floor` while it has few and
    never below it: a feature that never moved in a few labels may still move by its noise."""
    n = len(memory)
    if n < 2:
        return floor.copy()
    diff = memory[:, None, :] - memory[None, :, :]
    d = np.sqrt((diff**2).sum(axis=2))
    np.fill_diagonal(d, np.inf)
    nearest = memory[d.argmin(axis=1)]
    typical = np.sqrt(((memory - nearest) ** 2).mean(axis=0))
    shrunk = np.sqrt((prior_weight * floor**2 + n * typical**2) / (prior_weight + n))
    out: npt.NDArray[np.float64] = np.maximum(shrunk, floor)
    return out


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


# Per feature, the spread (in feature units) below which a device's own events are not trusted to
# vary less: measurement noise and the scatter a few labels cannot show. A 240 V device is never
# a 120 V one, so a leg feature's floor is small enough that another leg is far (0.25: four
# spreads); an on event is not an off event either, but a device's off is its on reversed.
NOISE_FLOOR = {
    "on": 0.5,
    "log_p": 0.03,
    "q_ratio": 0.06,
    "pf_step": 0.04,
    "leg_a": 0.25,
    "leg_b": 0.25,
    "leg_ab": 0.25,
    "inrush": 0.3,
    "ramp": 0.2,
    "settle": 0.3,
    "run": 0.5,
    "tod_sin": 0.5,
    "tod_cos": 0.5,
}


# What the distance to a device's confirmed events leaves out: when a device runs and how its draw
# settles vary from one use to the next, so a device used at a new hour is not a new device (in
# the simulator's seed 3 a vacuum matched a microwave's labels better than the microwave's own
# events matched one another across the day: novelty ROC AUC 0.72 -> 0.81 without them).
DISTANCE_IGNORES = ("tod_sin", "tod_cos", "settle")


# Features an event may show less of than its device's labels without being any less like it: a
# meter sampling at 1 Hz catches a compressor's inrush only when a sample falls on it, so one
# start shows three times its step and the next none (ANTgen h4: a fridge's starts whose inrush
# fell between samples were 40 of its 339 events called new). More than any label showed (a
# motor's inrush on what was a heater's step) still counts.
ONE_SIDED = ("inrush",)


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
