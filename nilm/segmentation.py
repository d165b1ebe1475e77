"""From change points to steps of steady power: one `LegStep` per physical switch on a leg.

Change points split a leg's active power into segments. A segment of fewer than
`min_steady_samples` samples is a transient (an inrush spike, a sample caught mid-switch, a ramp
sample); the change points around transients form one *group*, whose step runs from the steady
level before its first change point to the steady level after its last. Groups that follow
each other closely in the same direction are one step too: a ramp (`ramp_gap_s`), a two-stage
soft start that holds a level between its climbs (`staircase_s`), or a slow slide between them,
within `max_ramp_s`; small groups inside such a chain join it. A group whose levels before and
after differ by less than `min_event_w` (a spike that returns) is no step at all.

Levels are medians of the samples next to the step: the last `before_samples` of the segment
before and the first `after_samples` of the segment after, because loads drift while they run
and what identifies a switch is the step itself.

Everything here works on global sample indices and is decided only when no later sample can
change it, so the steps found do not depend on how the readings were cut into batches.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

__all__ = [
    "LEG_QUANTITIES",
    "LegPairer",
    "LegSegmenter",
    "LegStep",
    "SampleBuffer",
    "SegmentationConfig",
    "leg_wander",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Per-leg quantities kept for the steps: active, apparent and reactive power, current, voltage.
LEG_QUANTITIES = ("p", "s", "q", "i", "v")


@dataclass(frozen=True, slots=True)
class SegmentationConfig:
    """How change points become steps.

    Parameters
    ----------
    min_event_w
        Smallest step of steady active power that is an event, in watts.
    min_steady_samples
        A segment shorter than this is a transient inside a step, not a steady level.
    before_samples, after_samples
        How many samples next to a step give the levels before and after it.
    ramp_gap_s
        Steps in the same direction at most this far apart (from the last change point of one
        to the first of the next) are one ramp.
    spike_s
        A step that comes back to its level before within this time is a transient.
    hold_s
        ... but a single clean step whose new level holds steady (within `min_event_w` / 3
        or 5 % of the step)
        this long before the next climb is a switch of its own, as is the climb (a kettle
        switching its second element on 3 s after the first).
    jump_ratio
        ... and a jump within one sample this many times the step before it, after the leg
        climbed slowly for longer than `ramp_gap_s` (a microwave's magnetron after its fan).
    staircase_s
        The same, once a step has transient samples (a soft start holding between climbs).
    max_ramp_s
        A staircase never spans more than this.
    legs_merge_s
        Steps on legs a and b at most this far apart, in the same direction, are one 'ab' event.
    legs_ratio_max
        ... and of comparable size: the larger at most this many times the smaller (a 240 V load
        draws the same current on both legs; two 120 V loads switching in the same second on
        different legs are two events).
    legs_overshoot_min
        ... and, for starts, that overshoot alike: where one leg's peak rises this many steps
        above its new level (an inrush), the other's must rise at least half as far.
    max_gap_s
        A step whose first sample ends a gap in the readings of at most this long is stamped
        at the gap's start and spans it.
    decay_s
        After a step up that overshoots (an inrush), falls within this time of its start that
        continue the decay towards the new level are part of the step, not switches of their
        own (a compressor start: 884 -> 305 -> 141 -> 94 -> 80 -> 76 W at 1 Hz).
    wander_before_s, wander_after_s
        Windows before and after a step in which the leg's wander is measured, in seconds...
    wander_before_samples, wander_after_samples
        ... and in samples at most (the buffer keeps `wander_before_samples` before a step).
    wander_lag
        Wander is what moves the leg's power over this many samples beyond its sample-to-sample
        noise.
    wander_k
        A step smaller than this many times the leg's wander is the load wandering (a TV with
        the picture), not a switch.
    wander_cap_w
        Moves larger than this are switches, never wander.
    max_slide_s
        Moves that are no switches but together leave the leg's level by `wander_cap_w`
        within this time are one step: a slow slide under wander (a washer's spin-up).
    wander_memory_s, wander_moves, recent_k
        A leg that moved at least `wander_moves` times by less than `wander_cap_w` in the last
        `wander_memory_s` wanders: a step there must exceed `recent_k` times the upper quartile
        of those moves.
    persist_fraction
        A step smaller than `wander_cap_w` is a switch only if the leg's level over the wander
        windows (medians) moved by at least `min_event_w` and, where the leg wanders, by this
        fraction of the step: wander comes back.

    Examples
    --------
    >>> SegmentationConfig(min_event_w=50.0).staircase_s
    8.0
    """

    min_event_w: float = 30.0
    min_steady_samples: int = 2
    before_samples: int = 5
    after_samples: int = 3
    ramp_gap_s: float = 4.5
    spike_s: float = 2.5
    hold_s: float = 2.5
    jump_ratio: float = 3.0
    staircase_s: float = 8.0
    max_ramp_s: float = 20.0
    legs_merge_s: float = 2.0
    legs_ratio_max: float = 1.6
    legs_overshoot_min: float = 1.0
    max_gap_s: float = 30.0
    decay_s: float = 15.0
    wander_before_s: float = 60.0
    wander_after_s: float = 15.0
    wander_before_samples: int = 60
    wander_after_samples: int = 15
    wander_lag: int = 4
    wander_k: float = 2.5
    wander_cap_w: float = 150.0
    max_slide_s: float = 60.0
    wander_memory_s: float = 600.0
    wander_moves: int = 4
    recent_k: float = 1.5
    persist_fraction: float = 0.6

    def __post_init__(self) -> None:
        if self.min_event_w <= 0 or self.min_steady_samples < 1:
            raise ValueError(
                f"min_event_w={self.min_event_w} must be > 0 and "
                f"min_steady_samples={self.min_steady_samples} >= 1"
            )
        if self.before_samples < 1 or self.after_samples < 1:
            raise ValueError("before_samples and after_samples must be at least 1")
        if self.wander_lag < 1 or self.wander_after_samples < self.after_samples:
            raise ValueError(
                f"wander_lag={self.wander_lag} must be >= 1 and wander_after_samples="
                f"{self.wander_after_samples} >= after_samples={self.after_samples}"
            )


def _median(x: FloatArray) -> float:
    """Median of the finite values (NaN if none); plain Python, as windows are a few samples."""
    vals = sorted(v for v in x.tolist() if math.isfinite(v))
    n = len(vals)
    if not n:
        return math.nan
    half = n // 2
    return float(vals[half]) if n % 2 else 0.5 * (vals[half - 1] + vals[half])


def leg_wander(
    before: FloatArray, after: FloatArray | None = None, lag: int = 4, cap_w: float = 150.0
) -> float:
    """How far a load wanders over `lag` samples beyond its sample-to-sample noise, in watts.

    White noise moves a load as much from one sample to the next as over `lag` samples; a load
    that wanders (a TV with the picture, a PC with its work) moves further over `lag` samples.
    The upper quartiles of both spans' absolute differences are compared, so one switch in the
    window (a few large differences) does not count as wander. Windows on both sides of a step
    are pooled, without the differences across the step. Differences over `cap_w` are switches,
    never wander: a microwave cycling its magnetron is not a load wandering by a kilowatt.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> noise = 200 + rng.normal(0, 15, 60)
    >>> wander = 200 + np.repeat(rng.uniform(-40, 40, 12), 5) + rng.normal(0, 2, 60)
    >>> round(leg_wander(noise)), leg_wander(wander) > 20
    (0, True)
    """
    far: list[FloatArray] = []
    near: list[FloatArray] = []
    for x in (before, after):
        if x is None:
            continue
        x = x[np.isfinite(x)]
        if x.size > lag:
            d_far = np.abs(x[lag:] - x[:-lag])
            d_near = np.abs(np.diff(x))
            far.append(d_far[d_far <= cap_w])
            near.append(d_near[d_near <= cap_w])
    if sum(f.size for f in far) < lag + 2 or sum(n.size for n in near) < lag + 2:
        return 0.0
    q_far = float(np.quantile(np.concatenate(far), 0.85))
    q_near = float(np.quantile(np.concatenate(near), 0.85))
    # a margin over the noise: with a few dozen samples, white noise alone can move q_far 30 %
    return math.sqrt(max(q_far * q_far - 2.25 * q_near * q_near, 0.0))


class SampleBuffer:
    """The recent samples of one home, addressed by global sample index.

    Columns: `ts_us` and, per leg, the quantities of `LEG_QUANTITIES` (``a_p``, ``b_q``, ...).

    Examples
    --------
    >>> buf = SampleBuffer()
    >>> cols = {name: np.arange(4.0) for name in buf.cols}
    >>> buf.append(np.arange(4) * 1_000_000, cols)
    >>> buf.trim(2)
    >>> buf.start, buf.end, buf.window("a_p", 0, 4).tolist()
    (2, 4, [2.0, 3.0])
    """

    __slots__ = ("cols", "start", "ts_us")

    def __init__(self) -> None:
        self.start = 0
        self.ts_us = np.empty(0, np.int64)
        self.cols: dict[str, FloatArray] = {
            f"{leg}_{q}": np.empty(0, np.float64) for leg in "ab" for q in LEG_QUANTITIES
        }

    @property
    def end(self) -> int:
        """One past the global index of the newest sample."""
        return self.start + len(self.ts_us)

    def append(self, ts_us: IntArray, cols: dict[str, FloatArray]) -> None:
        self.ts_us = np.concatenate([self.ts_us, ts_us])
        for name in self.cols:
            self.cols[name] = np.concatenate([self.cols[name], cols[name]])

    def trim(self, keep_from: int) -> None:
        """Forget samples before global index `keep_from`."""
        cut = min(max(keep_from - self.start, 0), len(self.ts_us))
        if cut:
            self.ts_us = self.ts_us[cut:]
            for name in self.cols:
                self.cols[name] = self.cols[name][cut:]
            self.start += cut

    def ts(self, index: int) -> int:
        return int(self.ts_us[index - self.start])

    def index_at(self, ts_us: int, lo: int) -> int:
        """The global index of the first sample at or after `ts_us`, searching from `lo`."""
        base = max(lo, self.start) - self.start
        return self.start + base + int(np.searchsorted(self.ts_us[base:], ts_us, side="left"))

    def window(self, name: str, lo: int, hi: int) -> FloatArray:
        lo = max(lo, self.start)
        return self.cols[name][lo - self.start : max(hi - self.start, lo - self.start)]


@dataclass(frozen=True, slots=True)
class LegStep:
    """A closed step on one leg, with the levels of both legs around it.

    `first` and `last` are the global indices of its first and last change point (the first
    samples of the new levels); `last_ts_us` is when its rise ends (a ramp's end; an inrush's
    decay is not part of it, so ``last_ts_us - ts_us`` is the ramp); `before` and `after` map
    ``{leg}_{quantity}`` to the medians of the windows before `first` and after `last`; `peak`
    maps each leg to its largest active power from `first` to the end of the after window.
    `decay` describes how an inrush on this leg decays to the new level: ``ratio_1s``,
    ``ratio_3s`` and ``ratio_5s`` are the excess over the new level 1, 3 and 5 s after the peak
    as a fraction of the peak's, ``tau_s`` the time until it falls below 1/e of it (empty when
    the step has no inrush).
    """

    leg: str
    first: int
    last: int
    ts_us: int
    last_ts_us: int
    before: dict[str, float]
    after: dict[str, float]
    peak: dict[str, float]
    settle_slope_w_per_s: float
    n_changepoints: int
    decay: dict[str, float] = field(default_factory=dict)

    @property
    def delta_p_w(self) -> float:
        return self.after[f"{self.leg}_p"] - self.before[f"{self.leg}_p"]


@dataclass(slots=True)
class _Group:
    first: int
    last: int
    after_hi: int  # one past the after window
    n_cps: int
    delta_w: float
    rise_last: int = -1  # the last change point of the rise, before any decay joined
    decayed: bool = False  # whether an inrush's decay has joined it

    def __post_init__(self) -> None:
        if self.rise_last < 0:
            self.rise_last = self.last


@dataclass(slots=True)
class LegSegmenter:
    """Turns one leg's change points into closed `LegStep`s as soon as they are certain.

    `cps` are change points not yet part of a closed step; `seg_start` is where the current
    steady segment began (the last change point of the last closed step); `event_end` is the
    last change point of the last step that was a switch: the windows that judge wander look
    back no further, so a switch is never judged against the level before the previous one.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> buf = SampleBuffer()
    >>> p = np.r_[np.full(30, 100.0), 900.0, np.full(39, 350.0)] + rng.normal(0, 1, 70)
    >>> cols = {name: np.full(70, 120.0) for name in buf.cols}
    >>> cols["a_p"] = p
    >>> buf.append(np.arange(70) * 1_000_000, cols)
    >>> seg = LegSegmenter("a")
    >>> seg.add(np.array([30, 31]))  # up to the inrush, down to the new level
    >>> [(s.first, round(s.delta_p_w, -1), round(s.peak["a"], -2)) for s in seg.close(buf, 69)]
    [(30, 250.0, 900.0)]
    """

    leg: str
    config: SegmentationConfig = field(default_factory=SegmentationConfig)
    cps: list[int] = field(default_factory=list)
    seg_start: int = 0
    event_end: int = 0
    moves: list[tuple[int, float]] = field(default_factory=list)
    # (time, levels before) of the recent moves that were no switch, since the last switch
    slide_from: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    # a step found goes on sliding the same way until then: no second one inside it
    slide_until: tuple[int, bool] = (0, True)
    sliding: tuple[int, bool] = (0, True)  # ... and where the last slide found goes on

    def add(self, cps: IntArray) -> None:
        self.cps.extend(int(c) for c in cps)

    def first_pending(self) -> int | None:
        return self.cps[0] if self.cps else None

    def _raw_group(
        self, i: int, buf: SampleBuffer, known: int, final: bool, prev: int
    ) -> tuple[_Group, int] | None:
        """The group of change points starting at cps[i], or None while it is not yet certain.

        Returns the group and the index in `cps` after it.
        """
        cfg = self.config
        cps = self.cps
        j = i
        while j + 1 < len(cps) and cps[j + 1] - cps[j] < cfg.min_steady_samples:
            j += 1
        last = cps[j]
        nxt = cps[j + 1] if j + 1 < len(cps) else None
        after_hi = last + cfg.after_samples
        if nxt is not None:
            after_hi = min(after_hi, nxt)
        elif known < max(after_hi, last + cfg.min_steady_samples) - 1:
            if not final:
                return None
            after_hi = min(after_hi, buf.end)
            if after_hi <= last:
                return None
        name = f"{self.leg}_p"
        before = _median(buf.window(name, max(prev, cps[i] - cfg.before_samples), cps[i]))
        after = _median(buf.window(name, last, after_hi))
        return _Group(cps[i], last, after_hi, j - i + 1, after - before), j + 1

    def close(self, buf: SampleBuffer, known: int, final: bool = False) -> list[LegStep]:
        """Steps that no later sample can change; `known` is the last index whose change
        points are all known. With `final`, the stream has ended: close what there is."""
        cfg = self.config
        steps: list[LegStep] = []
        if known < 0 and not final:
            return steps
        while self.cps:
            first = self._raw_group(0, buf, known, final, self.seg_start)
            if first is None:
                break
            group, nxt = first
            # A ramp or staircase: a group chains the groups that follow it in the same
            # direction (and small ones between them) while each starts within `ramp_gap_s` of
            # the chain's end, or within `staircase_s` once the chain has transient samples (a
            # soft start that holds a level between two climbs), or later when the power keeps
            # moving that way in between (a slow ramp); never beyond `max_ramp_s` from its start.
            # A leading group too small to be part of a step is noise and starts no chain.
            # on a wandering leg, moves that follow each other are the wander, not a ramp; only
            # a slide larger than any wander (a washer's spin-down) chains
            wandering = self._recent(buf.ts(group.first)) > 0.0
            while abs(group.delta_w) >= cfg.min_event_w / 3.0:
                # (a climb larger than any wander is no wander, even on a wandering leg)
                big = abs(group.delta_w) >= cfg.wander_cap_w
                slow = group.n_cps >= 2 and (big or not wandering)
                gap_s = cfg.staircase_s if slow else cfg.ramp_gap_s
                gap_limit = buf.ts(group.last) + int(gap_s * 1e6)
                ramp_limit = buf.ts(group.first) + int(cfg.max_ramp_s * 1e6)
                decay_limit = buf.ts(group.first) + int(cfg.decay_s * 1e6)
                if nxt < len(self.cps):
                    c2 = self.cps[nxt]
                    # an inrush still decaying towards the next change point
                    decaying = buf.ts(c2) <= decay_limit and self._decaying(group, c2, buf)
                    if buf.ts(c2) > ramp_limit and not decaying:
                        break
                    if (
                        buf.ts(c2) > gap_limit
                        and not decaying
                        and not self._moving(group, c2, buf, wandering)
                    ):
                        break
                    follow = self._raw_group(nxt, buf, known, final, group.last)
                    if follow is None:
                        return steps
                    g2, nxt2 = follow
                    same = (g2.delta_w > 0) == (group.delta_w > 0)
                    small = abs(g2.delta_w) < cfg.min_event_w
                    name = f"{self.leg}_p"
                    lo = max(self.seg_start, group.first - cfg.before_samples)
                    before = _median(buf.window(name, lo, group.first))
                    after = _median(buf.window(name, g2.last, g2.after_hi))
                    soon = buf.ts(g2.first) - buf.ts(group.last) <= cfg.spike_s * 1e6
                    # a short excursion that comes back is a transient, not two switches; so is
                    # one whose decay brings the leg back (a PC's burst of work fading away)
                    back = abs(after - before) < cfg.min_event_w and (
                        soon or (decaying and self._faded(group, g2, before, buf))
                    )
                    # a fall that continues an inrush's decay, the load still on after it
                    decay = decaying and g2.delta_w < 0 and after - before >= cfg.min_event_w
                    # an inrush held for a sample or two, then one fall to the running level (a
                    # compressor: 69 -> 530 -> 620 -> 125 W): the fall ends the inrush
                    held = (
                        soon
                        and not group.decayed
                        and group.delta_w > 0
                        and g2.delta_w < 0
                        and after - before >= cfg.min_event_w
                        and before + group.delta_w - after
                        >= max(cfg.min_event_w, 0.5 * (after - before))
                    )
                    decay = decay or held
                    if not (same or small or back or decay):
                        break
                    # a ramp climbs without falling back: a rise after an inrush has decayed
                    # is the next switch (a water heater starting while a heat pump settles)
                    if same and not small and (group.decayed or decaying):
                        break
                    # a clean step whose level then holds steady is a switch of its own, and so
                    # is the next climb (a kettle's second element 3 s after its first)
                    if same and not small and self._held(group, g2, buf):
                        break
                    # a sudden jump far larger than the slow climb before it is the next switch
                    # (a microwave's magnetron after its lamp and fan came up over 6 s)
                    if same and not small and self._jumps(group, g2, buf):
                        break
                    rise_last = g2.last if same else group.rise_last
                    group = _Group(
                        group.first,
                        g2.last,
                        g2.after_hi,
                        group.n_cps + g2.n_cps,
                        after - before,
                        rise_last,
                        group.decayed or (decay and not small),
                    )
                    nxt = nxt2
                    continue
                # no later change point yet: wait until none can chain any more
                if not final and buf.ts(min(known, buf.end - 1)) <= max(gap_limit, ramp_limit):
                    return steps
                break
            # the windows that judge the step (wander, decay) must be complete
            if not final and not self._after_complete(group, buf, known):
                return steps
            del self.cps[:nxt]
            prev = self.seg_start
            switch = self._is_switch(group, buf) and not self._in_slide(group, buf)
            self.seg_start = group.last
            if switch:
                steps.append(self._step(group, prev, buf))
                self.event_end = group.last
                self.slide_from = []
                self.slide_until = (buf.ts(group.first) + int(cfg.max_slide_s * 1e6),
                                    group.delta_w > 0)  # fmt: skip
                continue
            self._remember_move(buf.ts(group.first), abs(group.delta_w))
            slid = self._slide(group, prev, buf)
            if slid is not None:
                steps.append(slid)
                self.event_end = group.last
        return steps

    def _in_slide(self, group: _Group, buf: SampleBuffer) -> bool:
        """Whether a climb of several change points without an inrush continues, the same way,
        a slide found moments ago (the rest of a washer's spin-up), rather than being a switch;
        a clean one-sample step or a motor's start there is still a switch of its own."""
        until, up = getattr(self, "sliding", (0, True))
        if buf.ts(group.first) >= until or up != (group.delta_w > 0) or group.n_cps < 2:
            return False
        return abs(group.delta_w) < self.config.wander_cap_w and not self._has_inrush(group, buf)

    def _slide(self, group: _Group, prev: int, buf: SampleBuffer) -> LegStep | None:
        """A slow slide made of moves too small or too wandering to be switches, once the leg
        has left its level before the first of them by `wander_cap_w` within `max_slide_s` (a
        washer's drum spinning up by 200-500 W over 30-45 s under its own wander), as one step
        stamped at the move that completes it; None while it has not."""
        cfg = self.config
        name = f"{self.leg}_p"
        now = buf.ts(group.first)
        until, up = getattr(self, "slide_until", (0, True))
        if now < until and up == (group.delta_w > 0):
            return None
        horizon = now - int(cfg.max_slide_s * 1e6)
        anchors = [a for a in getattr(self, "slide_from", []) if a[0] >= horizon]
        lo = max(prev, group.first - cfg.before_samples)
        anchors.append((now, self._levels(lo, group.first, buf)))
        self.slide_from = anchors
        after = _median(buf.window(name, group.last, self._wander_to(group, buf)))
        if not math.isfinite(after):
            return None
        moved = [after - levels[name] for _, levels in anchors]
        best = max(range(len(moved)), key=lambda k: abs(moved[k]))
        if abs(moved[best]) < cfg.wander_cap_w or (moved[best] > 0) != (group.delta_w > 0):
            return None
        step = self._step(group, prev, buf)
        self.slide_from = []
        self.slide_until = (anchors[best][0] + int(cfg.max_slide_s * 1e6), moved[best] > 0)
        self.sliding = self.slide_until
        # the slide's levels before are its first move's; the completing move's decay is not its
        return replace(step, before=anchors[best][1], decay={})

    def _levels(self, lo: int, hi: int, buf: SampleBuffer) -> dict[str, float]:
        return {
            f"{leg}_{q}": _median(buf.window(f"{leg}_{q}", lo, hi))
            for leg in "ab"
            for q in LEG_QUANTITIES
        }

    def _is_switch(self, group: _Group, buf: SampleBuffer) -> bool:
        """Whether a closed group is a switch rather than noise or a load wandering.

        A step of at least `wander_cap_w` is a switch when it reaches `min_event_w`; so is one
        that starts with an inrush (a motor: wander never overshoots) and leaves the leg at its
        new level once the inrush has decayed. A smaller one must also stand out of the leg's
        wander and leave the leg at its new level (`_persists`).
        """
        cfg = self.config
        size = abs(group.delta_w)
        if size < cfg.min_event_w:
            return False
        if size >= cfg.wander_cap_w:
            return True
        if self._has_inrush(group, buf):
            # its level is read while the inrush still decays: a burst of work that fades
            # back (a PC) leaves the leg where it was
            return self._settles_above(group, buf)
        threshold = self._threshold(group, buf)
        # where the leg shows no wander, a load that settles slowly (a dishwasher's pump) need
        # only stay a switch's worth above its old level
        fraction = cfg.persist_fraction if threshold > cfg.min_event_w else 0.0
        return size >= threshold and self._persists(group, buf, fraction)

    def _has_inrush(self, group: _Group, buf: SampleBuffer) -> bool:
        if group.delta_w <= 0:
            return False
        w = buf.window(f"{self.leg}_p", group.first, group.after_hi)
        w = w[np.isfinite(w)]
        if not w.size:
            return False
        after = _median(buf.window(f"{self.leg}_p", group.last, group.after_hi))
        excess = float(w.max()) - after
        return excess >= max(self.config.min_event_w, 0.5 * group.delta_w)

    def _remember_move(self, ts_us: int, size: float) -> None:
        """Keep the leg's recent moves under `wander_cap_w` that were no switch, for `_recent`
        (a dishwasher's own pump switching is no sign that the leg wanders)."""
        cfg = self.config
        if cfg.min_event_w / 3.0 <= size < cfg.wander_cap_w:
            self.moves.append((ts_us, size))
        horizon = ts_us - int(cfg.wander_memory_s * 1e6)
        while self.moves and self.moves[0][0] < horizon:
            self.moves.pop(0)

    def _settles_above(self, group: _Group, buf: SampleBuffer) -> bool:
        """Whether a step up with an inrush still stands `min_event_w` above the level before
        it once the inrush has had `wander_after_s` to decay (up to any larger switch)."""
        cfg = self.config
        name = f"{self.leg}_p"
        lo = max(self.seg_start, group.first - cfg.before_samples)
        before = _median(buf.window(name, lo, group.first))
        after_w = buf.window(name, group.last, self._wander_to(group, buf))
        start = _median(after_w[: cfg.after_samples])
        big = np.flatnonzero(np.abs(after_w - start) >= cfg.wander_cap_w)
        tail = after_w[cfg.after_samples : big[0] if big.size else after_w.size]
        if np.count_nonzero(np.isfinite(tail)) < 3:
            return True
        return _median(tail) - before >= cfg.min_event_w

    def _recent(self, ts_us: int) -> float:
        """How large the leg's moves have been lately, when it has moved often (a PC's bursts of
        work, a TV's scenes): the upper quartile of the moves in the last `wander_memory_s`
        before `ts_us`, or 0 when there were fewer than `wander_moves`."""
        cfg = self.config
        horizon = ts_us - int(cfg.wander_memory_s * 1e6)
        sizes = [size for t, size in self.moves if horizon <= t < ts_us]
        if len(sizes) < cfg.wander_moves:
            return 0.0
        return float(np.quantile(sizes, 0.75))

    def _threshold(self, group: _Group, buf: SampleBuffer) -> float:
        """The smallest step that is a switch here: `min_event_w`, or more where the leg wanders
        on both sides of the step (the quieter side decides: a TV switching off leaves quiet)."""
        cfg = self.config
        name = f"{self.leg}_p"
        before = buf.window(name, self._wander_from(group, buf), group.first)
        after = buf.window(name, group.last, self._wander_to(group, buf))
        wander = leg_wander(before, after, cfg.wander_lag, cfg.wander_cap_w)
        recent = self._recent(buf.ts(group.first))
        return max(cfg.min_event_w, cfg.wander_k * wander, cfg.recent_k * recent)

    def _persists(self, group: _Group, buf: SampleBuffer, fraction: float) -> bool:
        """Whether the leg's level over the wander windows moved as much as the step says: a
        switch leaves the load at its new level, a load wandering comes back."""
        cfg = self.config
        name = f"{self.leg}_p"
        before_w = buf.window(name, self._wander_from(group, buf), group.first)
        before = _median(before_w)
        after_w = buf.window(name, group.last, self._wander_to(group, buf))
        # up to the next switch that no wander makes (a heater switching on 4 s later)
        start = _median(after_w[: cfg.after_samples])
        big = np.flatnonzero(np.abs(after_w - start) >= cfg.wander_cap_w)
        after = _median(after_w[: big[0]] if big.size else after_w)
        moved = after - before
        up = group.delta_w > 0
        least = max(cfg.min_event_w, fraction * abs(group.delta_w))
        if (moved > 0) == up and abs(moved) >= least:
            return True
        # Wander comes back within the range it wandered over; a switch right after the load
        # wandered the other way (a fridge stopping just after the TV brightened) leaves that
        # range by a switch's worth even when the window's median lags behind.
        finite = before_w[np.isfinite(before_w)]
        if finite.size < cfg.wander_lag + 2 or not math.isfinite(after):
            return False
        edge = float(np.quantile(finite, 0.9 if up else 0.1))
        beyond = after - edge if up else edge - after
        return beyond >= cfg.min_event_w

    def _wander_from(self, group: _Group, buf: SampleBuffer) -> int:
        """Where the window before a step begins: `wander_before_s` back, at most
        `wander_before_samples`, never before the previous switch's end."""
        cfg = self.config
        lo = max(self.event_end, group.first - cfg.wander_before_samples, buf.start)
        return buf.index_at(buf.ts(group.first) - int(cfg.wander_before_s * 1e6), lo)

    def _wander_to(self, group: _Group, buf: SampleBuffer) -> int:
        """One past the window after a step: `wander_after_s` on, `wander_after_samples` at most."""
        cfg = self.config
        hi = min(group.last + cfg.wander_after_samples, buf.end)
        return min(buf.index_at(buf.ts(group.last) + int(cfg.wander_after_s * 1e6), group.last), hi)

    def _after_complete(self, group: _Group, buf: SampleBuffer, known: int) -> bool:
        """Whether every sample of the window after the step is known (so the decision is the
        same however the readings were batched)."""
        cfg = self.config
        if known >= group.last + cfg.wander_after_samples - 1:
            return True
        newest = min(known, buf.end - 1)
        return newest >= group.last and buf.ts(newest) >= buf.ts(group.last) + int(
            cfg.wander_after_s * 1e6
        )

    def _decaying(self, group: _Group, until: int, buf: SampleBuffer) -> bool:
        """Whether a step up overshot and its power is still falling from its end to `until`."""
        if group.delta_w <= 0:
            return False
        w = buf.window(f"{self.leg}_p", group.last, until)
        w = w[np.isfinite(w)]
        if w.size < 2:
            return False
        fall = float(w[0] - w[-1])
        # still falling; where a large inrush is fading, the motor's draw already wanders a
        # little (a vacuum's 2042 -> 1626 -> 1404 -> 1310 -> 1251 -> 1207 -> 1218 W is still its
        # decay), while a heater that sagged a little and held has stopped falling
        slack = max(2.0, 0.1 * fall) if fall >= 0.2 * group.delta_w else 2.0
        if fall < self.config.min_event_w / 3.0 or float(w[-1]) > float(w[:-1].min()) + slack:
            return False
        # an inrush peaks where the step ends and only falls after it; a load that holds or
        # climbs for seconds and then drops (a washer's heating pulse) switched twice
        return float(w[0]) >= float(w.max()) - slack

    def _faded(self, group: _Group, g2: _Group, before: float, buf: SampleBuffer) -> bool:
        """Whether an inrush had already lost most of its excess over `before` when `g2`
        began: a burst fading away, not a load that ran and then switched off."""
        w = buf.window(f"{self.leg}_p", group.first, g2.first)
        w = w[np.isfinite(w)]
        return w.size >= 2 and float(w[-1]) - before <= 0.5 * (float(w.max()) - before)

    def _jumps(self, group: _Group, g2: _Group, buf: SampleBuffer) -> bool:
        """Whether `g2` is a jump within one sample, at least `jump_ratio` times the step that
        `group` has made so far, after the leg moved for longer than `ramp_gap_s` since."""
        cfg = self.config
        if g2.n_cps != 1 or abs(g2.delta_w) < cfg.jump_ratio * abs(group.delta_w):
            return False
        if buf.ts(g2.first) - buf.ts(group.last) <= cfg.ramp_gap_s * 1e6:
            return False
        w = buf.window(f"{self.leg}_p", g2.first - 1, g2.first + 1)
        return w.size == 2 and abs(float(w[1] - w[0])) >= 0.8 * abs(g2.delta_w)

    def _held(self, group: _Group, g2: _Group, buf: SampleBuffer) -> bool:
        """Whether `group` is one clean step after which the leg held its new level, without
        moving by more than `min_event_w` / 3 (or 5 % of the step), for at least `hold_s`
        before `g2` begins."""
        cfg = self.config
        if group.n_cps != 1 or buf.ts(g2.first) - buf.ts(group.last) < cfg.hold_s * 1e6:
            return False
        w = buf.window(f"{self.leg}_p", group.last, g2.first)
        w = w[np.isfinite(w)]
        # a load's noise grows with its draw (a 4 kW leg moves by 15 W from second to second)
        steady = max(cfg.min_event_w / 3.0, 0.05 * abs(group.delta_w))
        return w.size >= 2 and float(w.max() - w.min()) <= steady

    def _moving(self, group: _Group, until: int, buf: SampleBuffer, wandering: bool) -> bool:
        """Whether the power keeps moving in the group's direction from its end to `until` (by
        more than any wander, when the leg wanders)."""
        w = buf.window(f"{self.leg}_p", group.last, until)
        if w.size < 4:
            return False
        half = w.size // 2
        trend = _median(w[half:]) - _median(w[:half])
        same = (trend > 0) == (group.delta_w > 0)
        # a slide is all movement; a big step followed by a heater's slow sag is not a slide
        least = self.config.wander_cap_w if wandering else self.config.min_event_w / 3
        big_enough = abs(trend) >= max(least, 0.25 * abs(group.delta_w))
        return bool(same and big_enough)

    def _step(self, g: _Group, prev: int, buf: SampleBuffer) -> LegStep:
        cfg = self.config
        before = self._levels(max(prev, g.first - cfg.before_samples), g.first, buf)
        after = self._levels(g.last, g.after_hi, buf)
        peak: dict[str, float] = {}
        for leg in "ab":
            w = buf.window(f"{leg}_p", g.first, g.after_hi)
            w = w[np.isfinite(w)]
            peak[leg] = float(w.max()) if w.size else math.nan
        settle = buf.window(f"{self.leg}_p", g.last, g.after_hi)
        slope = 0.0
        if settle.size >= 2 and g.after_hi - 1 > g.last:
            dt = (buf.ts(g.after_hi - 1) - buf.ts(g.last)) / 1e6
            if dt > 0 and math.isfinite(settle[-1] - settle[0]):
                slope = float(settle[-1] - settle[0]) / dt
        return LegStep(
            leg=self.leg,
            first=g.first,
            last=g.last,
            ts_us=self._began_us(g, buf),
            last_ts_us=buf.ts(g.rise_last),
            before=before,
            after=after,
            peak=peak,
            settle_slope_w_per_s=slope,
            n_changepoints=g.n_cps,
            decay=self._decay(g, after[f"{self.leg}_p"], buf),
        )

    def _began_us(self, g: _Group, buf: SampleBuffer) -> int:
        """When the step began: its first sample, or, when that sample ends a gap in the
        readings (a logger that missed seconds), the second after the last sample before the
        gap; the step then spans the gap (its ramp covers it), for it happened somewhere in it."""
        first = buf.ts(g.first)
        if g.first - 1 < buf.start:
            return first
        before = buf.ts(g.first - 1)
        if 1_500_000 < first - before <= int(self.config.max_gap_s * 1e6):
            return before + 1_000_000
        return first

    def _decay(self, g: _Group, level: float, buf: SampleBuffer) -> dict[str, float]:
        """How a step up's inrush decays to `level`: the excess 1, 3 and 5 s after the peak as
        a fraction of the peak's, and the time until it is below 1/e of it (see `LegStep`)."""
        cfg = self.config
        if g.delta_w <= 0 or not math.isfinite(level):
            return {}
        hi = self._wander_to(g, buf)
        x = buf.window(f"{self.leg}_p", g.first, hi)
        lo = max(g.first, buf.start) - buf.start
        t = buf.ts_us[lo : lo + x.size]
        keep = np.isfinite(x)
        x, t = x[keep], t[keep]
        if x.size < 2:
            return {}
        top = int(np.argmax(x))
        excess = float(x[top]) - level
        if excess < max(cfg.min_event_w / 3.0, 0.1 * g.delta_w):
            return {}
        rel_s = (t[top:] - t[top]) / 1e6
        ratio = (x[top:] - level) / excess
        out = {f"ratio_{k}s": float(np.interp(k, rel_s, ratio)) for k in (1, 3, 5)}
        below = np.flatnonzero(ratio < 1.0 / math.e)
        if below.size:
            i = int(below[0])
            frac = (ratio[i - 1] - 1.0 / math.e) / (ratio[i - 1] - ratio[i])
            out["tau_s"] = float(rel_s[i - 1] + frac * (rel_s[i] - rel_s[i - 1]))
        else:
            out["tau_s"] = float(rel_s[-1])
        return out


@dataclass(slots=True)
class LegPairer:
    """Pairs steps of legs a and b that happen together into one 'ab' switch.

    Steps wait here until the other leg can no longer produce a partner for them.

    Examples
    --------
    >>> def step(leg: str, ts_us: int) -> LegStep:
    ...     levels = {f"{leg}_p": 0.0}
    ...     return LegStep(leg, 0, 0, ts_us, ts_us, levels, {f"{leg}_p": 500.0}, {}, 0.0, 1)
    >>> pairer = LegPairer()
    >>> pairer.add([step("a", 10_000_000), step("b", 11_000_000)])
    >>> [(s.leg, p.leg if p else None) for s, p in pairer.pop_ready({"a": None, "b": None})]
    [('a', 'b')]
    """

    config: SegmentationConfig = field(default_factory=SegmentationConfig)
    waiting: dict[str, list[LegStep]] = field(default_factory=lambda: {"a": [], "b": []})

    def add(self, steps: list[LegStep]) -> None:
        for s in steps:
            self.waiting[s.leg].append(s)

    def pop_ready(
        self, open_from_us: dict[str, int | None], final: bool = False
    ) -> list[tuple[LegStep, LegStep | None]]:
        """Switches whose pairing is certain.

        `open_from_us[leg]` is the earliest time at which that leg may still produce a step (its
        first unclosed change point, or the end of what it has seen), None when it never will.
        """
        out: list[tuple[LegStep, LegStep | None]] = []
        window = int(self.config.legs_merge_s * 1e6)
        while self.waiting["a"] or self.waiting["b"]:
            heads = [s for s in (self.waiting["a"][:1] + self.waiting["b"][:1])]
            step = min(heads, key=lambda s: (s.ts_us, s.leg))
            other = "b" if step.leg == "a" else "a"
            horizon = step.ts_us + window
            opened = open_from_us[other]
            if not final and opened is not None and opened <= horizon:
                break
            partner = None
            for cand in self.waiting[other]:
                if cand.ts_us > horizon:
                    break
                if (
                    abs(cand.ts_us - step.ts_us) <= window
                    and (cand.delta_p_w > 0) == (step.delta_p_w > 0)
                    and self._comparable(cand.delta_p_w, step.delta_p_w)
                    and self._alike(cand, step)
                ):
                    partner = cand
                    break
            self.waiting[step.leg].remove(step)
            if partner is not None:
                self.waiting[other].remove(partner)
            out.append((step, partner))
        return out

    def _comparable(self, delta_a: float, delta_b: float) -> bool:
        small, large = sorted((abs(delta_a), abs(delta_b)))
        return large <= self.config.legs_ratio_max * small

    def _alike(self, x: LegStep, y: LegStep) -> bool:
        """Whether two starts overshoot alike, as the halves of one 240 V load do: a motor's
        inrush shows on both its legs in proportion. A compressor's inrush on one leg beside a
        TV's soft start on the other, in the same second, is two loads."""
        if x.delta_p_w <= 0:
            return True
        over = sorted((_overshoot(x), _overshoot(y)))
        return over[1] < self.config.legs_overshoot_min or over[0] >= 0.5 * over[1]


def _overshoot(step: LegStep) -> float:
    """How far a step's peak rose above its new level on its own leg, in steps."""
    excess = step.peak.get(step.leg, math.nan) - step.after[f"{step.leg}_p"]
    size = abs(step.delta_p_w)
    return max(excess, 0.0) / size if size > 0 and math.isfinite(excess) else 0.0
