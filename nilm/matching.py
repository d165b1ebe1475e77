"""Matching detected events to ground truth: precision, recall and F1 within a time tolerance.

A detected event and a truth event match when their times are within `tolerance_s` and their
steps go the same way (both on or both off). Matching is one to one, closest times first. Only
events of at least `min_w` count: truth events that small are not required (recall), detected
events that small are not penalised (precision), but either may still take part in a match, so
a 52 W truth step found as 48 W is neither a miss nor a false alarm.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

__all__ = ["MatchResult", "Timed", "match_events"]

logger = logging.getLogger(__name__)


class Timed(Protocol):
    """What matching needs of an event: when, how big, on which legs."""

    @property
    def ts(self) -> datetime: ...

    @property
    def delta_p_w(self) -> float: ...

    @property
    def legs(self) -> str: ...


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Counts and rates of a matching, with the matched pairs as (detected, truth) indices."""

    precision: float
    recall: float
    f1: float
    n_detected: int
    n_truth: int
    true_positives: int
    pairs: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    legs_agree: float = 1.0

    def as_dict(self) -> dict[str, float]:
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "n_detected": float(self.n_detected),
            "n_truth": float(self.n_truth),
            "true_positives": float(self.true_positives),
            "legs_agree": self.legs_agree,
        }


def match_events(
    detected: Sequence[Timed],
    truth: Sequence[Timed],
    tolerance_s: float = 2.0,
    min_w: float = 50.0,
    same_sign: bool = True,
) -> MatchResult:
    """Match `detected` to `truth` one to one, closest in time first.

    Parameters
    ----------
    detected, truth
        Events with `ts` (timezone-aware), `delta_p_w` and `legs` (`Event`, `TruthEvent`).
    tolerance_s
        Largest time difference of a match, in seconds.
    min_w
        Events with a smaller |ΔP| are not required and not penalised.
    same_sign
        Whether a match needs both steps to go the same way.

    Examples
    --------
    >>> from datetime import UTC, datetime, timedelta
    >>> from nilm.records import TruthEvent
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> truth = [TruthEvent(t0, "fridge", "a", "on", 125.0),
    ...          TruthEvent(t0 + timedelta(seconds=900), "fridge", "a", "off", -125.0)]
    >>> found = [TruthEvent(t0 + timedelta(seconds=1), "?", "a", "on", 120.0),
    ...          TruthEvent(t0 + timedelta(seconds=400), "?", "b", "on", 80.0)]
    >>> r = match_events(found, truth)
    >>> (r.precision, r.recall, r.pairs)
    (0.5, 0.5, ((0, 0),))
    """
    tol = tolerance_s
    t_det = [d.ts.timestamp() for d in detected]
    t_tru = [t.ts.timestamp() for t in truth]
    order = sorted(range(len(truth)), key=lambda j: t_tru[j])
    sorted_t = [t_tru[j] for j in order]
    candidates: list[tuple[float, int, int]] = []

    for i, ti in enumerate(t_det):
        lo = bisect.bisect_left(sorted_t, ti - tol)
        hi = bisect.bisect_right(sorted_t, ti + tol)
        for k in range(lo, hi):
            j = order[k]
            if same_sign and (detected[i].delta_p_w > 0) != (truth[j].delta_p_w > 0):
                continue
            candidates.append((abs(ti - t_tru[j]), i, j))
    candidates.sort()
    used_d: set[int] = set()
    used_t: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _dt, i, j in candidates:
        if i in used_d or j in used_t:
            continue
        used_d.add(i)
        used_t.add(j)
        pairs.append((i, j))
    pairs.sort()
    big_d = {i for i, d in enumerate(detected) if abs(d.delta_p_w) >= min_w}
    big_t = {j for j, t in enumerate(truth) if abs(t.delta_p_w) >= min_w}
    tp_d = len(big_d & used_d)
    tp_t = len(big_t & used_t)
    precision = tp_d / len(big_d) if big_d else 1.0
    recall = tp_t / len(big_t) if big_t else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    agree = [detected[i].legs == truth[j].legs for i, j in pairs]
    return MatchResult(
        precision=precision,
        recall=recall,
        f1=f1,
        n_detected=len(big_d),
        n_truth=len(big_t),
        true_positives=tp_t,
        pairs=tuple(pairs),
        legs_agree=sum(agree) / len(agree) if agree else 1.0,
    )
