"""Per-home event detection: readings in, one `Event` per physical switch out.

`HomeEventDetector` is what the dataflow keeps in its state for each home. This first version
is the derivative-threshold baseline: a jump between consecutive samples, confirmed by the
steady level a few samples later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nilm.records import Event, ReadingBatch, event_id_for, from_epoch_us

__all__ = ["HomeEventDetector"]

_SETTLE = 4
_HISTORY = 8


@dataclass(slots=True)
class _LegTail:
    ts_us: list[int] = field(default_factory=list)
    p: list[float] = field(default_factory=list)
    s: list[float] = field(default_factory=list)


class HomeEventDetector:
    """Finds steps of steady active power on legs a and b of one home.

    Parameters
    ----------
    home_id
        The home whose readings come in.
    min_event_w
        The smallest step reported, in watts of active power.

    Examples
    --------
    >>> import numpy as np
    >>> from nilm.records import READING_COLUMNS, ReadingBatch
    >>> n = 40
    >>> cols = {c: np.full(n, 120.0) for c in READING_COLUMNS}
    >>> cols["a_act_power"] = np.where(np.arange(n) < 20, 100.0, 600.0)
    >>> cols["a_aprt_power"] = cols["a_act_power"] * 1.1
    >>> batch = ReadingBatch("h", np.arange(n), np.arange(n) * 1_000_000, cols)
    >>> [(e.legs, round(e.delta_p_w)) for e in HomeEventDetector("h").update(batch)]
    [('a', 500)]
    """

    def __init__(self, home_id: str, min_event_w: float = 30.0, detector: str = "derivative") -> None:
        self.home_id = home_id
        self.detector = detector
        self.min_event_w = min_event_w
        self.tail = ReadingBatch.empty(home_id)

    def update(self, batch: ReadingBatch) -> list[Event]:
        """Events whose new steady level is known by the end of `batch`."""
        if len(batch) == 0:
            return []
        data = ReadingBatch.concat([self.tail, batch]) if len(self.tail) else batch
        p = data.act_power()
        n = p.shape[1]
        start = max(len(self.tail) - _SETTLE - 1, _HISTORY)
        found: list[tuple[int, str]] = []
        for leg_index, leg in enumerate("ab"):
            x = p[leg_index]
            jumps = np.flatnonzero(np.abs(np.diff(x)) >= self.min_event_w) + 1
            last = -_SETTLE
            for t in jumps.tolist():
                if t < start or t + _SETTLE > n or t - last < _SETTLE:
                    continue
                before = float(np.median(x[t - 3 : t]))
                after = float(np.median(x[t + _SETTLE - 3 : t + _SETTLE]))
                if abs(after - before) >= self.min_event_w:
                    found.append((t, leg))
                    last = t
        events = self._merge(data, sorted(found))
        keep = max(n - _HISTORY - _SETTLE, 0)
        self.tail = data[keep:]
        return events

    def flush(self) -> list[Event]:
        """Nothing is held back beyond the settling samples, which never complete."""
        return []

    def _merge(self, data: ReadingBatch, found: list[tuple[int, str]]) -> list[Event]:
        events: list[Event] = []
        i = 0
        while i < len(found):
            t, leg = found[i]
            legs = leg
            if i + 1 < len(found) and found[i + 1][1] != leg and found[i + 1][0] - t <= 2:
                legs = "ab"
                i += 1
            events.append(self._event(data, t, legs))
            i += 1
        return events

    def _event(self, data: ReadingBatch, t: int, legs: str) -> Event:
        def level(col: str, lo: int, hi: int) -> float:
            return float(np.median(data.columns[col][lo:hi]))

        def delta(quantity: str) -> float:
            return sum(
                level(f"{leg}_{quantity}", t + _SETTLE - 3, t + _SETTLE)
                - level(f"{leg}_{quantity}", t - 3, t)
                for leg in legs
            )

        dp_leg = {
            leg: level(f"{leg}_act_power", t + _SETTLE - 3, t + _SETTLE)
            - level(f"{leg}_act_power", t - 3, t)
            for leg in "ab"
        }
        p_before = sum(level(f"{leg}_act_power", t - 3, t) for leg in legs)
        dp = sum(dp_leg[leg] for leg in legs)
        ds = delta("aprt_power")
        dq = float(np.sqrt(max(ds * ds - dp * dp, 0.0))) * (1.0 if dp >= 0 else -1.0)
        ts_us = int(data.ts_us[t - 1]) if t > 0 else int(data.ts_us[t])
        peak = float(sum(data.columns[f"{leg}_act_power"][t : t + _SETTLE].max() for leg in legs))
        volts = [level(f"{leg}_voltage", t - 3, t) for leg in legs]
        return Event(
            event_id=event_id_for(self.home_id, ts_us // 1_000_000 * 1_000_000, legs),
            home_id=self.home_id,
            ts=from_epoch_us(ts_us),
            legs=legs,
            delta_p_w=dp,
            delta_q_var=dq,
            delta_s_va=ds,
            delta_current_a=delta("current"),
            delta_pf=0.0,
            p_before_w=p_before,
            p_after_w=p_before + dp,
            delta_p_a_w=dp_leg["a"],
            delta_p_b_w=dp_leg["b"],
            voltage_v=float(np.nansum(volts)) if legs == "ab" else float(volts[0]),
            inrush_peak_w=max(peak - (p_before + dp), 0.0) if dp > 0 else 0.0,
            detector="derivative",
        )
