"""Provisional events: an event on screen within seconds, refined until it is final.

`HomeEventDetector` emits a step only when no later reading can change it, about 28 s after it
begins. To show it sooner, after every batch `ProvisionalTracker` asks the detector what its
pending events look like now (`HomeEventDetector.pending_events`: the change points it has,
closed as if the stream ended here, plus `TailSteps` in the newest samples, on which the
change-point detector has not spoken yet) and emits those that are new or have moved as
*provisional* events. Each keeps its deterministic `event_id` (home, second, legs), so the sink's
upsert refines the same row while a ramp goes on or an inrush decays.

Two things remove provisional rows, both in a `Settlement`:

- `retracted`: ids this tracker showed and that stand no more (a transient that was no step, a
  step whose id changed because its second moved or a second leg joined it);
- `settled_before`: every final event that begins before this time has been emitted, so any
  provisional row of the home before it that is not final is void. This is what makes the
  table exact under crashes: Bytewax resumes from the last snapshot, and rows written after it
  are unknown to the restored tracker, but they lie in the detector's span and are swept when
  it settles. It lags the detector's horizon by `carry_s`, so that the final events within
  `carry_s` of a provisional one exist by then (the sink carries a label on a provisional event
  to the final one that replaced it: see `flows.sink`).

The final events do not depend on any of this: the detector's state is only read.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from nilm.records import Event, from_epoch_us
from nilm.segmentation import (
    LEG_QUANTITIES,
    LegStep,
    SampleBuffer,
    SegmentationConfig,
    leg_wander,
)

if TYPE_CHECKING:
    from nilm.detection import HomeEventDetector

__all__ = ["SETTLE_TABLE", "ProvisionalTracker", "Settlement", "TailSteps", "chain_ramp_steps"]

logger = logging.getLogger(__name__)

# The sink item that carries a `Settlement`: (SETTLE_TABLE, Settlement.row()).
SETTLE_TABLE = "events_settle"


def _median(x: np.ndarray[Any, np.dtype[np.float64]]) -> float:
    """Median of the finite values (NaN if none); plain Python, as windows are a few samples."""
    vals = sorted(v for v in x.tolist() if math.isfinite(v))
    n = len(vals)
    if not n:
        return math.nan
    return float(vals[n // 2]) if n % 2 else 0.5 * (vals[n // 2 - 1] + vals[n // 2])


@dataclass(frozen=True, slots=True)
class Settlement:
    """Provisional `events` rows of one home that no longer stand.

    Parameters
    ----------
    home_id
        The home.
    retracted
        Ids of provisional events withdrawn by the tracker (the sink deletes them unless final).
    settled_before
        Provisional rows of the home that begin before this time and are not final are void;
        None settles nothing by time, and `everything` settles every provisional row.
    everything
        The stream has ended: every event has been emitted.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> Settlement("h", ("e1",), datetime(2026, 1, 5, tzinfo=UTC)).row()["retracted"]
    ['e1']
    """

    home_id: str
    retracted: tuple[str, ...] = ()
    settled_before: datetime | None = None
    everything: bool = False

    def row(self) -> dict[str, Any]:
        """The sink's view, under the table name `SETTLE_TABLE`."""
        return {
            "home_id": self.home_id,
            "retracted": list(self.retracted),
            "settled_before": self.settled_before,
            "everything": self.everything,
        }


@dataclass(frozen=True, slots=True)
class TailSteps:
    """Finds a step in the newest samples of a leg, before the change-point detector can.

    The level is the median of the last samples before the tail (at least `min_level_samples`
    of them since the last change point, else the level is still moving and nothing is said).
    A step is the newest run of samples that all lie at least `min_event_w` on one side of it,
    once it is `confirm_samples` long: one sample off is a spike. It begins where the ramp into
    that run began, and the level is taken before that. Its new level is the median
    of the run's newest `after_samples`, where an inrush has decayed most.

    Parameters
    ----------
    min_event_w
        The smallest step, in watts.
    confirm_samples
        How many samples off the level make a step.
    min_level_samples, before_samples
        The fewest and the most samples that give the level before the tail.
    after_samples
        How many of the newest samples give the level after.
    max_ramp_samples
        How far back a ramp's start is looked for (`max_ramp_s` of the segmenter, at 1 Hz).
    wander_samples, wander_lag, wander_k, wander_cap_w
        A step must also be `wander_k` times the leg's wander (`leg_wander` over the
        `wander_samples` before it), as the segmenter asks of a small switch.

    Examples
    --------
    >>> buf = SampleBuffer()
    >>> p = np.r_[np.full(10, 100.0), 600.0, 400.0]
    >>> cols = {name: np.full(12, 120.0) for name in buf.cols}
    >>> cols["a_p"] = p
    >>> buf.append(np.arange(12) * 1_000_000, cols)
    >>> [(s.first, s.delta_p_w) for s in TailSteps(30.0)("a", buf, 0, 8)]
    [(10, 400.0)]
    """

    min_event_w: float
    confirm_samples: int = 2
    min_level_samples: int = 3
    before_samples: int = 5
    after_samples: int = 3
    max_ramp_samples: int = 20
    wander_samples: int = 60
    wander_lag: int = 4
    wander_k: float = 2.5
    wander_cap_w: float = 150.0

    def __call__(
        self, leg: str, buf: SampleBuffer, level_from: int, tail_from: int, min_w: float = 0.0
    ) -> list[LegStep]:
        """The step on `leg` in samples `tail_from` onwards, if any; `level_from` is where the
        current steady segment began, `min_w` the smallest step the leg's recent moves allow."""
        end = buf.end
        lo = max(level_from, tail_from - self.before_samples, buf.start)
        if tail_from - lo < self.min_level_samples or end - tail_from < self.confirm_samples:
            return []
        name = f"{leg}_p"
        level = _median(buf.window(name, lo, tail_from))
        off = buf.window(name, tail_from, end) - level
        if not math.isfinite(level) or not np.isfinite(off[-1]):
            return []
        side = off >= self.min_event_w if off[-1] > 0 else off <= -self.min_event_w
        if not side[-1]:
            return []
        first = len(off) - 1
        while first > 0 and side[first - 1]:
            first -= 1
        if len(off) - first < self.confirm_samples:
            return []
        floor = max(level_from, buf.start)
        run_first = buf.window(name, floor, tail_from + first + 1)
        start = self._ramp_start(run_first, floor, up=off[-1] > 0)
        lo = max(level_from, start - self.before_samples, buf.start)
        if start - lo < self.min_level_samples:
            start = tail_from + first  # all ramp since the level began: judge the run alone
            lo = max(level_from, tail_from - self.before_samples, buf.start)
        after_lo = max(start, end - self.after_samples)
        before: dict[str, float] = {}
        after: dict[str, float] = {}
        peak: dict[str, float] = {}
        for leg_ in "ab":
            for q in LEG_QUANTITIES:
                col = f"{leg_}_{q}"
                before[col] = _median(buf.window(col, lo, start))
                after[col] = _median(buf.window(col, after_lo, end))
            w = buf.window(f"{leg_}_p", start, end)
            w = w[np.isfinite(w)]
            peak[leg_] = float(w.max()) if w.size else math.nan
        ts = buf.ts(start)
        step = LegStep(leg, start, start, ts, ts, before, after, peak, 0.0, 1)
        # where the leg wanders, the segmenter asks more of a switch: so does a preview of one
        quiet = buf.window(name, max(buf.start, start - self.wander_samples), start)
        wander = leg_wander(quiet, None, self.wander_lag, self.wander_cap_w)
        least = max(self.min_event_w, min_w, self.wander_k * wander)
        return [step] if abs(step.delta_p_w) >= least else []

    def _ramp_start(self, p: np.ndarray[Any, np.dtype[np.float64]], offset: int, up: bool) -> int:
        """Where the ramp that ends in `p`'s last sample (the run's first) began.

        A slow ramp (a heater's element cooling, a charger's soft start) is a switch's worth
        off the level only some seconds in; stamped there, the step would begin one second
        later at every sample while the level window slides into the ramp. Walking back while
        each sample moved the step's way by more than noise (`min_event_w / 6`, at most
        `max_ramp_samples`) finds the second it began, which is the segmenter's too.
        """
        k = p.size - 1
        if k < 1 or not math.isfinite(p[k]):
            return offset + k
        sign = 1.0 if up else -1.0
        least = self.min_event_w / 6.0
        floor = max(k - self.max_ramp_samples, 0)
        j = k
        while j > floor and sign * (p[j] - p[j - 1]) >= least:
            j -= 1
        return offset + (j + 1 if j < k else k)


def chain_ramp_steps(
    steps: list[LegStep], config: SegmentationConfig, decided: int = 0
) -> list[LegStep]:
    """One leg's pending steps with each ramp still climbing made one step.

    On a ramp that goes on, the change-point detector has closed its start and `TailSteps`
    finds a new step at the newest samples, one second later at every sample; shown as they
    are, the ramp would flicker through a new id each second. A step joins the one before it
    when both go the same way, it begins within `max_ramp_s` of that one, and either within
    `ramp_gap_s` of its end (as the segmenter chains) or the power kept moving that way between
    them (its level before is at least `min_event_w / 3` past the earlier one's level after):
    the joined step keeps the earlier one's start, so its id.
    Two loads that each settle before the next switches stay two steps (the power held still
    between them). Past `max_ramp_s` the segmenter makes a ramp several events, and so does this.
    Steps the segmenter has already closed for good are its decision: they join nothing.

    Parameters
    ----------
    steps
        One leg's steps, oldest first.
    config
        The segmenter's settings (`max_ramp_s`, `min_event_w`).
    decided
        How many of the first steps are final (closed by the segmenter, awaiting their
        pairing): those are left as they are.

    Examples
    --------
    >>> def step(ts_s: int, before: float, after: float) -> LegStep:
    ...     return LegStep("a", ts_s, ts_s, ts_s * 1_000_000, ts_s * 1_000_000,
    ...                    {"a_p": before}, {"a_p": after}, {"a": after}, 0.0, 1)
    >>> ramp = [step(0, 200.0, 440.0), step(5, 800.0, 1100.0)]
    >>> [(s.ts_us, s.delta_p_w) for s in chain_ramp_steps(ramp, SegmentationConfig())]
    [(0, 900.0)]
    >>> settled = [step(0, 200.0, 440.0), step(8, 445.0, 745.0)]
    >>> len(chain_ramp_steps(settled, SegmentationConfig()))
    2
    """
    out = list(steps[:decided])
    for step in steps[decided:]:
        prev = out[-1] if len(out) > decided else None
        if prev is not None and _continues(prev, step, config):
            out[-1] = LegStep(
                leg=prev.leg,
                first=prev.first,
                last=step.last,
                ts_us=prev.ts_us,
                last_ts_us=max(prev.last_ts_us, step.last_ts_us),
                before=prev.before,
                after=step.after,
                peak={leg: max(prev.peak[leg], step.peak[leg]) for leg in step.peak},
                settle_slope_w_per_s=step.settle_slope_w_per_s,
                n_changepoints=prev.n_changepoints + step.n_changepoints,
                decay=step.decay,
            )
        else:
            out.append(step)
    return out


def _continues(prev: LegStep, step: LegStep, config: SegmentationConfig) -> bool:
    name = f"{prev.leg}_p"
    up = prev.delta_p_w > 0
    if step.leg != prev.leg or (step.delta_p_w > 0) != up:
        return False
    if step.ts_us - prev.ts_us > config.max_ramp_s * 1e6:
        return False
    if step.ts_us - prev.last_ts_us <= config.ramp_gap_s * 1e6:
        return True  # as near as the segmenter itself chains steps the same way
    moved = step.before[name] - prev.after[name]
    return (moved if up else -moved) >= config.min_event_w / 3.0


class ProvisionalTracker:
    """Emits a home's provisional events, their refinements and their retractions.

    Parameters
    ----------
    home_id
        The home.
    min_event_w
        The smallest event, in watts.
    refine_w
        A provisional event is written again when its step moves by more than this (or 2 %),
        or its ramp or inrush changes: small wobbles are not worth a row update.
    carry_s
        How far behind the detector's horizon provisional rows are settled (see the module).
    sweep_s
        Settle at least this often, in seconds of readings, even with nothing new: rows left by
        a crash are swept within it.

    Examples
    --------
    >>> import numpy as np
    >>> from nilm.detection import HomeEventDetector
    >>> from nilm.records import READING_COLUMNS, ReadingBatch
    >>> rng = np.random.default_rng(0)
    >>> cols = {c: np.full(40, 120.0) for c in READING_COLUMNS}
    >>> cols["a_act_power"] = np.r_[np.full(30, 100.0), np.full(10, 600.0)] + rng.normal(0, 1, 40)
    >>> cols["a_aprt_power"] = cols["a_act_power"] * 1.1
    >>> batch = ReadingBatch("h", np.arange(40), np.arange(40) * 1_000_000, cols)
    >>> det = HomeEventDetector("h", provisional=True)
    >>> [(e.provisional, round(e.delta_p_w, -1)) for e in det.update_live(batch[:32])]
    [(True, 500.0)]
    """

    def __init__(
        self,
        home_id: str,
        min_event_w: float = 30.0,
        refine_w: float = 5.0,
        carry_s: float = 2.0,
        sweep_s: float = 60.0,
    ) -> None:
        self.home_id = home_id
        self.min_event_w = min_event_w
        self.refine_w = refine_w
        self.carry_s = carry_s
        self.sweep_s = sweep_s
        self.tail = TailSteps(min_event_w)
        # provisional events written and not withdrawn, by id, as last written
        self.shown: dict[str, Event] = {}
        self.settled_us: int | None = None

    def revise(
        self, detector: HomeEventDetector, finals: list[Event], flushed: bool
    ) -> list[Event | Settlement]:
        """After a batch: provisional events new or moved, then a `Settlement` if any is due."""
        final_ids = {e.event_id for e in finals}
        current: dict[str, Event] = {}
        if not flushed:
            for e in detector.pending_events(self.tail, self.tail.confirm_samples):
                if abs(e.delta_p_w) >= self.min_event_w and e.event_id not in final_ids:
                    current[e.event_id] = e
        for event_id in final_ids:
            self.shown.pop(event_id, None)
        retracted = tuple(sorted(i for i in self.shown if i not in current))
        for event_id in retracted:
            del self.shown[event_id]
        out: list[Event | Settlement] = []
        for e in sorted(current.values(), key=lambda e: (e.ts, e.event_id)):
            old = self.shown.get(e.event_id)
            if old is None or self._moved(old, e):
                shown = replace(e, provisional=True)
                self.shown[e.event_id] = shown
                out.append(shown)
        settlement = self._settlement(detector, retracted, bool(finals), flushed)
        if settlement is not None:
            out.append(settlement)
        return out

    def _moved(self, old: Event, new: Event) -> bool:
        tolerance = max(self.refine_w, 0.02 * abs(old.delta_p_w))
        return (
            abs(new.delta_p_w - old.delta_p_w) > tolerance
            or abs(new.inrush_peak_w - old.inrush_peak_w) > tolerance
            or abs(new.ramp_s - old.ramp_s) >= 1.0
        )

    def _settlement(
        self,
        detector: HomeEventDetector,
        retracted: tuple[str, ...],
        new_finals: bool,
        flushed: bool,
    ) -> Settlement | None:
        if flushed:
            self.settled_us = None
            return Settlement(self.home_id, retracted, None, everything=True)
        horizon = detector.settled_until_us()
        before_us = None
        if horizon is not None:
            # rows are stamped with the second their step begins
            before_us = horizon // 1_000_000 * 1_000_000 - int(self.carry_s * 1e6)
        moved = before_us is not None and (self.settled_us is None or before_us > self.settled_us)
        overdue = (
            moved
            and before_us is not None
            and self.settled_us is not None
            and before_us - self.settled_us >= self.sweep_s * 1e6
        )
        if not retracted and not ((new_finals and moved) or overdue):
            return None
        if moved:
            self.settled_us = before_us
        settled = from_epoch_us(before_us) if moved and before_us is not None else None
        return Settlement(self.home_id, retracted, settled)
