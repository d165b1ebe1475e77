"""Unknown-device candidates: online clustering of the events that no confirmed device explains.

River's `DBSTREAM` groups novel events (in the weighted feature space of
`nilm.classification.weighted`, where the noise between events of one device is about 0.3-0.5,
keeping the features that on and off events of one device share).
Its macro-cluster numbers are renumbered whenever it re-clusters, so `UnknownClusters` keeps its
own registry of candidates with stable ids: each DBSTREAM cluster centre is matched to the nearest
registered candidate within `match_radius`, or starts a new one whose id is derived from the home
and the first event's id (deterministic, so a replay makes the same ids). The user names a
candidate, and the learner then learns its events as that device.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from river import cluster

from nilm.classification import weighted
from nilm.records import Event

__all__ = ["CLUSTER_FEATURES", "UnknownCluster", "UnknownClusters"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class UnknownCluster:
    """A candidate unknown device: a group of similar novel events."""

    cluster_id: str
    home_id: str
    center: dict[str, float]
    n_events: int = 0
    sum_abs_delta_p_w: float = 0.0
    legs: str = ""
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    name: str | None = None
    event_ids: list[str] = field(default_factory=list)

    @property
    def typical_delta_p_w(self) -> float:
        return self.sum_abs_delta_p_w / self.n_events if self.n_events else 0.0

    def row(self) -> dict[str, Any]:
        """The `clusters` table row."""
        return {
            "cluster_id": self.cluster_id,
            "home_id": self.home_id,
            "n_events": self.n_events,
            "typical_delta_p_w": self.typical_delta_p_w,
            "legs": self.legs,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "name": self.name,
        }


# What a device looks like whichever way it switches: its on and off events share these, so both
# land in one candidate (inrush, ramp, run length and the direction itself are left out).
CLUSTER_FEATURES = ("log_p", "q_ratio", "pf_step", "leg_a", "leg_b", "leg_ab")


def _distance(a: dict[str, float], b: dict[str, float]) -> float:
    return math.sqrt(sum((a.get(k, 0.0) - b.get(k, 0.0)) ** 2 for k in a.keys() | b.keys()))


class UnknownClusters:
    """Clusters novel events into named-later candidates with stable ids.

    Parameters
    ----------
    home_id
        The home (part of every cluster id).
    clustering_threshold, fading_factor, cleanup_interval, intersection_factor, minimum_weight
        DBSTREAM's parameters; time counts novel events.
    match_radius
        How far (weighted feature units) a DBSTREAM centre may be from a registered candidate and
        still be the same candidate.
    max_event_ids
        How many event ids each candidate remembers (the newest), for naming.

    Examples
    --------
    >>> from datetime import UTC, datetime, timedelta
    >>> from nilm.records import Event
    >>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
    >>> uc = UnknownClusters("h")
    >>> ids = []
    >>> for i in range(6):
    ...     dp = 1000.0 if i % 2 else 3000.0
    ...     e = Event(f"e{i}", "h", t0 + timedelta(minutes=i), "ab", dp, 0.0, dp, 0.0, 0.0, 0.0,
    ...               dp, dp / 2, dp / 2, 240.0)
    ...     ids.append(uc.learn_one({"log_p": 3.0 + 0.477 * (i % 2 == 0)}, e).cluster_id)
    >>> len(set(ids)), ids[0] == ids[2] == ids[4], ids[1] == ids[3]
    (2, True, True)
    """

    def __init__(
        self,
        home_id: str,
        clustering_threshold: float = 1.0,
        fading_factor: float = 0.001,
        cleanup_interval: float = 50,
        intersection_factor: float = 0.3,
        minimum_weight: float = 1.0,
        match_radius: float = 2.0,
        max_event_ids: int = 200,
    ) -> None:
        self.home_id = home_id
        self.clustering_threshold = clustering_threshold
        self.fading_factor = fading_factor
        self.cleanup_interval = cleanup_interval
        self.intersection_factor = intersection_factor
        self.minimum_weight = minimum_weight
        self.match_radius = match_radius
        self.max_event_ids = max_event_ids
        self.stream: Any = cluster.DBSTREAM(
            clustering_threshold=clustering_threshold,
            fading_factor=fading_factor,
            cleanup_interval=cleanup_interval,
            intersection_factor=intersection_factor,
            minimum_weight=minimum_weight,
        )
        self.registry: dict[str, UnknownCluster] = {}

    def clone(self) -> UnknownClusters:
        return UnknownClusters(
            self.home_id, self.clustering_threshold, self.fading_factor, self.cleanup_interval,
            self.intersection_factor, self.minimum_weight, self.match_radius, self.max_event_ids,
        )  # fmt: skip

    def nearest(self, wx: dict[str, float]) -> UnknownCluster | None:
        """The registered candidate nearest to weighted features `wx`, within `match_radius`."""
        best: tuple[float, str] | None = None
        for cid in sorted(self.registry):
            d = _distance(wx, self.registry[cid].center)
            if d <= self.match_radius and (best is None or d < best[0]):
                best = (d, cid)
        return self.registry[best[1]] if best else None

    def learn_one(self, x: dict[str, float], event: Event) -> UnknownCluster:
        """Add a novel event; returns its candidate (created if none is near)."""
        wx = {k: v for k, v in weighted(x).items() if k in CLUSTER_FEATURES}
        self.stream.learn_one(wx)
        index = self.stream.predict_one(wx)
        centre = self.stream.centers.get(index) if self.stream.n_clusters else None
        # The DBSTREAM centre when the event sits in a macro-cluster, the event itself otherwise.
        anchor = dict(centre) if centre and _distance(centre, wx) <= self.match_radius else wx
        found = self.nearest(anchor) or self.nearest(wx)
        if found is None:
            cid = hashlib.blake2b(
                f"{self.home_id}|{event.event_id}".encode(), digest_size=8
            ).hexdigest()
            found = UnknownCluster(cid, self.home_id, dict(wx), legs=event.legs)
            found.first_seen = event.ts
            self.registry[cid] = found
        found.n_events += 1
        found.sum_abs_delta_p_w += abs(event.delta_p_w)
        found.last_seen = event.ts
        # The candidate's own centre follows its events (a running mean).
        rate = 1.0 / found.n_events
        for k in wx.keys() | found.center.keys():
            c = found.center.get(k, 0.0)
            found.center[k] = c + rate * (wx.get(k, 0.0) - c)
        found.event_ids.append(event.event_id)
        del found.event_ids[: -self.max_event_ids]
        return found

    def name(self, cluster_id: str, device: str) -> UnknownCluster | None:
        """Give a candidate the user's device name; None if there is no such candidate."""
        found = self.registry.get(cluster_id)
        if found is not None:
            found.name = device
        return found
