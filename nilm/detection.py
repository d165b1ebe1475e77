"""Per-home event detection: readings in, one `Event` per physical switch out.

`HomeEventDetector` is what the dataflow keeps in its state for each home. It runs a change-point
detector on the active power of both legs (BOCPD by default; CUSUM and a derivative threshold for
comparison), turns change points into steps of steady power (`nilm.segmentation`), pairs steps of
both legs into 'ab' switches, and emits each switch once, when no later reading can change it:
about `SegmentationConfig.max_ramp_s` (20 s) plus the detector's lag (8 samples) after the step
begins. Events do not depend on how the readings are cut into batches, and the whole state
pickles (about 17 kB a home).

With `provisional=True`, `update_live` also answers within seconds: the events not yet final,
as they stand now, and what they no longer are (`nilm.provisional`). The final events are the
same either way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np

from nilm.changepoint import ChangePointDetector, make_detector
from nilm.provisional import ProvisionalTracker, Settlement, TailSteps, chain_ramp_steps
from nilm.records import Event, ReadingBatch, event_id_for, from_epoch_us
from nilm.segmentation import LegPairer, LegSegmenter, LegStep, SampleBuffer, SegmentationConfig

__all__ = ["HomeEventDetector"]

logger = logging.getLogger(__name__)


def _leg_columns(batch: ReadingBatch) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {}
    for leg in "ab":
        p = np.asarray(batch.columns[f"{leg}_act_power"], dtype=np.float64)
        s = np.asarray(batch.columns[f"{leg}_aprt_power"], dtype=np.float64)
        cols[f"{leg}_p"] = p
        cols[f"{leg}_s"] = s
        cols[f"{leg}_q"] = np.sqrt(np.maximum(s * s - p * p, 0.0))
        cols[f"{leg}_i"] = np.asarray(batch.columns[f"{leg}_current"], dtype=np.float64)
        cols[f"{leg}_v"] = np.asarray(batch.columns[f"{leg}_voltage"], dtype=np.float64)
    return cols


class HomeEventDetector:
    """Finds steps of steady active power on legs a and b of one home.

    Parameters
    ----------
    home_id
        The home whose readings come in.
    min_event_w
        The smallest step reported, in watts of active power.
    detector
        'bocpd' (default), 'cusum' or 'derivative'.
    noise_w
        Typical noise of a steady load in watts; sets the detectors' priors and thresholds.
        2 W is what the real Shelly recording shows on its busier leg and what the simulator
        makes (robust MAD of first differences: 2.0 W and 2.1-2.5 W); results on both hold
        from 2 to 8 W.
    config
        Segmentation settings; built from `min_event_w` when None.
    provisional
        Whether `update_live` also gives provisional events (see `nilm.provisional`).

    Examples
    --------
    >>> import numpy as np
    >>> from nilm.records import READING_COLUMNS, ReadingBatch
    >>> rng = np.random.default_rng(0)
    >>> n = 60
    >>> cols = {c: np.full(n, 120.0) for c in READING_COLUMNS}
    >>> cols["a_act_power"] = np.where(np.arange(n) < 30, 100.0, 600.0) + rng.normal(0, 1, n)
    >>> cols["a_aprt_power"] = cols["a_act_power"] * 1.1
    >>> batch = ReadingBatch("h", np.arange(n), np.arange(n) * 1_000_000, cols)
    >>> det = HomeEventDetector("h")
    >>> [(e.legs, round(e.delta_p_w, -1)) for e in det.update(batch) + det.flush()]
    [('a', 500.0)]
    """

    def __init__(
        self,
        home_id: str,
        min_event_w: float = 30.0,
        detector: str = "bocpd",
        noise_w: float = 2.0,
        config: SegmentationConfig | None = None,
        provisional: bool = False,
    ) -> None:
        self.home_id = home_id
        self.min_event_w = min_event_w
        self.detector = detector
        self.noise_w = noise_w
        self.config = config
        self._config = config if config is not None else SegmentationConfig(min_event_w)
        self._cpd: ChangePointDetector = make_detector(
            detector, channels=2, noise_w=noise_w, min_event_w=self._config.min_event_w
        )
        self._buf = SampleBuffer()
        self._legs = {leg: LegSegmenter(leg, self._config) for leg in "ab"}
        self._pairer = LegPairer(self._config)
        self._seen = 0
        self.provisional = provisional
        self._tracker = (
            ProvisionalTracker(home_id, self._config.min_event_w) if provisional else None
        )

    def update(self, batch: ReadingBatch) -> list[Event]:
        """Events whose steps are certain by the end of `batch`."""
        if len(batch) == 0:
            return []
        cols = _leg_columns(batch)
        self._buf.append(np.asarray(batch.ts_us, dtype=np.int64), cols)
        cps = self._cpd.update(np.vstack([cols["a_p"], cols["b_p"]]))
        for leg, found in zip("ab", cps, strict=True):
            self._legs[leg].add(found)
        self._seen += len(batch)
        return self._advance(final=False)

    def flush(self) -> list[Event]:
        """At the end of the stream: the events the last readings can still settle."""
        if self._seen == 0:
            return []
        return self._advance(final=True)

    # -- the hook for provisional events (nilm.provisional) ----------------------------------

    def update_live(self, batch: ReadingBatch) -> list[Event | Settlement]:
        """`update`'s final events, then (with `provisional`) the provisional ones and the
        `Settlement` of those that no longer stand."""
        return self._revise(self.update(batch), flushed=False)

    def flush_live(self) -> list[Event | Settlement]:
        """`flush`, then (with `provisional`) the settlement of every provisional event."""
        return self._revise(self.flush(), flushed=True)

    def _revise(self, finals: list[Event], flushed: bool) -> list[Event | Settlement]:
        tracker = getattr(self, "_tracker", None)  # None in snapshots from before the hook
        if tracker is None or (self._seen == 0 and not finals):
            return list(finals)
        return [*finals, *tracker.revise(self, finals, flushed)]

    def pending_events(
        self, tail_steps: TailSteps | None = None, min_after_samples: int = 1
    ) -> list[Event]:
        """The events not emitted yet, as they stand now: what `flush` would give if the
        stream ended here, less steps with fewer than `min_after_samples` samples at their new
        level (one sample off may be a spike). Changes nothing.

        The change-point detector has not spoken on the newest `lag` samples yet;
        `tail_steps`, when given, looks for steps there.
        """
        # copies of what closing changes (steps are frozen: shared)
        legs = {
            leg: replace(seg, cps=list(seg.cps), moves=list(seg.moves))
            for leg, seg in self._legs.items()
        }
        waiting = {leg: list(steps) for leg, steps in self._pairer.waiting.items()}
        pairer = replace(self._pairer, waiting=waiting)
        level_from: dict[str, int] = {}
        for leg, seg in legs.items():
            steps = seg.close(self._buf, self._seen - 1, final=True)
            pairer.add([s for s in steps if self._seen - s.last >= min_after_samples])
            # a ramp's first change point, closed alone, may be too small for a switch: the
            # level to judge the tail by is then still the one before it
            level_from[leg] = seg.seg_start if steps else self._legs[leg].seg_start
        if tail_steps is not None:
            tail_from = max(self._seen - self._cpd.lag, 0)
            now_us = self._buf.ts(self._seen - 1)
            cfg = self._config
            for leg in legs:
                recent = cfg.recent_k * self._legs[leg]._recent(now_us)
                pairer.add(tail_steps(leg, self._buf, level_from[leg], tail_from, recent))
        for leg in "ab":
            decided = len(self._pairer.waiting[leg])
            waiting[leg] = chain_ramp_steps(waiting[leg], self._config, decided)
        never: dict[str, int | None] = {leg: None for leg in "ab"}
        return [self._event(s, p) for s, p in pairer.pop_ready(never, final=True)]

    def settled_until_us(self) -> int | None:
        """Every event that begins before this time (µs since the epoch) has been emitted;
        None before the first reading."""
        if self._seen == 0:
            return None
        known = self._seen - 1 - self._cpd.lag
        until = self._buf.ts(max(known, self._buf.start)) + 1
        for seg in self._legs.values():
            pending = seg.first_pending()
            if pending is not None:
                until = min(until, self._buf.ts(pending))
        for steps in self._pairer.waiting.values():
            until = min([until, *(s.ts_us for s in steps)])
        return until

    def _advance(self, final: bool) -> list[Event]:
        # every change point at or before `known` has been reported
        known = self._seen - 1 if final else self._seen - 1 - self._cpd.lag
        for seg in self._legs.values():
            self._pairer.add(seg.close(self._buf, known, final))
        open_from: dict[str, int | None] = {}
        for leg, seg in self._legs.items():
            pending = seg.first_pending()
            if final:
                open_from[leg] = None
            elif pending is not None:
                open_from[leg] = self._buf.ts(pending)
            else:
                open_from[leg] = self._buf.ts(max(known, self._buf.start)) + 1
        events = [self._event(s, p) for s, p in self._pairer.pop_ready(open_from, final)]
        self._trim(known)
        return events

    def _trim(self, known: int) -> None:
        keep = known + 1
        for seg in self._legs.values():
            pending = seg.first_pending()
            if pending is not None:
                keep = min(keep, pending)
        for steps in self._pairer.waiting.values():
            for s in steps:
                keep = min(keep, s.first)
        margin = max(self._config.before_samples, self._config.wander_before_samples)
        self._buf.trim(keep - margin - 2)

    def _event(self, step: LegStep, partner: LegStep | None) -> Event:
        by_leg = {step.leg: step}
        if partner is not None:
            by_leg[partner.leg] = partner
        legs = "".join(sorted(by_leg))
        ts_us = min(s.ts_us for s in by_leg.values())

        def level(leg: str, q: str, when: str) -> float:
            src = by_leg.get(leg, step)
            return (src.before if when == "before" else src.after)[f"{leg}_{q}"]

        def delta(q: str, legs_: str) -> float:
            return float(sum(level(leg, q, "after") - level(leg, q, "before") for leg in legs_))

        dp_a = delta("p", "a")
        dp_b = delta("p", "b")
        p_before = float(sum(level(leg, "p", "before") for leg in legs))
        p_after = float(sum(level(leg, "p", "after") for leg in legs))
        s_before = float(sum(level(leg, "s", "before") for leg in legs))
        s_after = float(sum(level(leg, "s", "after") for leg in legs))
        pf_before = p_before / s_before if s_before > 0 else math.nan
        pf_after = p_after / s_after if s_after > 0 else math.nan
        peak = float(sum(by_leg[leg].peak[leg] for leg in legs))
        volts = [level(leg, "v", "before") for leg in legs]
        dp = p_after - p_before
        ramp_s = max((s.last_ts_us - s.ts_us) / 1e6 for s in by_leg.values())
        extra = {"n_changepoints": float(sum(s.n_changepoints for s in by_leg.values()))}
        # the decay of the leg with the largest inrush
        inrush = max(by_leg.values(), key=lambda s: s.peak[s.leg] - s.after[f"{s.leg}_p"])
        extra.update({f"inrush_{k}": v for k, v in inrush.decay.items()})
        return Event(
            event_id=event_id_for(self.home_id, ts_us // 1_000_000 * 1_000_000, legs),
            home_id=self.home_id,
            ts=from_epoch_us(ts_us // 1_000_000 * 1_000_000),
            legs=legs,
            delta_p_w=dp,
            delta_q_var=delta("q", legs),
            delta_s_va=s_after - s_before,
            delta_current_a=delta("i", legs),
            delta_pf=pf_after - pf_before,
            p_before_w=p_before,
            p_after_w=p_after,
            delta_p_a_w=dp_a,
            delta_p_b_w=dp_b,
            # leg to leg for a 240 V switch; NaN where the source measures no voltage (REDD)
            voltage_v=float(np.sum(volts)),
            inrush_peak_w=max(peak - p_after, 0.0) if dp > 0 and math.isfinite(peak) else 0.0,
            ramp_s=ramp_s,
            settle_slope_w_per_s=float(sum(s.settle_slope_w_per_s for s in by_leg.values())),
            detector=self.detector,
            extra=extra,
        )
