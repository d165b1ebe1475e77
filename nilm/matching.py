"""Matching detected events to ground truth: precision, recall and F1 within a time tolerance.

A detected event and a truth event match when their times are within `tolerance_s` and their
steps go the same way (both on or both off). An event with a ramp (`ramp_s` > 0: a soft start, a
staircase shut-down, a decaying inrush) spans ``[ts, ts + ramp_s]``, and is within the tolerance of
any time in that span widened by `tolerance_s` on both sides: a detector stamps a staircase where
it begins, while a sub-metered truth may stamp it where the appliance's own trace reaches zero.
Matching is one to one, closest first (by the gap between spans, then by start times). Only
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


def _ramp_s(event: object) -> float:
    """The event's ramp in seconds; 0 for records without one (or a NaN or negative one)."""
    ramp = getattr(event, "ramp_s", 0.0)
    return float(ramp) if isinstance(ramp, (int, float)) and ramp > 0 else 0.0


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
        Events with `ts` (timezone-aware), `delta_p_w` and `legs` (`Event`, `TruthEvent`), and
        optionally `ramp_s`: such an event covers ``[ts, ts + ramp_s]``.
    tolerance_s
        Largest gap between the two events' spans of a match, in seconds.
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

    A staircase shut-down stamped where it begins, 5 s before the truth's stamp, still matches:

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Found:
    ...     ts: datetime
    ...     delta_p_w: float
    ...     legs: str
    ...     ramp_s: float
    >>> off = [TruthEvent(t0 + timedelta(seconds=905), "fridge", "a", "off", -125.0)]
    >>> match_events([Found(t0 + timedelta(seconds=900), -125.0, "a", 4.0)], off).recall
    1.0
    """
    tol = tolerance_s
    t_det = [d.ts.timestamp() for d in detected]
    t_tru = [t.ts.timestamp() for t in truth]
    end_det = [t + _ramp_s(d) for t, d in zip(t_det, detected, strict=True)]
    end_tru = [t + _ramp_s(e) for t, e in zip(t_tru, truth, strict=True)]
    order = sorted(range(len(truth)), key=lambda j: t_tru[j])
    sorted_t = [t_tru[j] for j in order]
    longest_truth_ramp = max((e - t for t, e in zip(t_tru, end_tru, strict=True)), default=0.0)
    candidates: list[tuple[float, float, int, int]] = []

    for i, ti in enumerate(t_det):
        # truth spans that can come within `tol` of [ti, end_det[i]]
        lo = bisect.bisect_left(sorted_t, ti - tol - longest_truth_ramp)
        hi = bisect.bisect_right(sorted_t, end_det[i] + tol)
        for k in range(lo, hi):
            j = order[k]
            gap = max(t_tru[j] - end_det[i], ti - end_tru[j], 0.0)
            if gap > tol:
                continue
            if same_sign and (detected[i].delta_p_w > 0) != (truth[j].delta_p_w > 0):
                continue
            candidates.append((gap, abs(ti - t_tru[j]), i, j))
    candidates.sort()
    used_d: set[int] = set()
    used_t: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for _gap, _dt, i, j in candidates:
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
