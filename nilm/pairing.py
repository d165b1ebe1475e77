"""On/off pairing: which off closes which on, giving activations (runs) and energy per device.

`Pairer` keeps the runs that are open on each leg set ('a', 'b', 'ab'). An off event closes the
open run on the same legs whose step it best matches: heating elements sag as they warm, so an
off may be a good deal smaller than its on (a ratio from `min_ratio` to `max_ratio` is accepted),
and runs overlap (the oven cycles while the microwave runs on the other leg, two similar loads
on one leg), so the closest match in log ratio wins, with a penalty when the predicted devices
differ. A run's energy is its duration times the mean of its on and off steps, which is exact
for a linear sag. `daily_breakdown` turns activations into energy per device per day, the
always-on base and what remains unexplained.

An off can be missed, merged into another step or measured too different from its on to match
(a TV whose draw wandered); its run would stay open until some later, unrelated off of a
similar size closes it hours later, or be given up with no energy at all. Every event carries
the power of its legs after the step, a floor no set of running loads can exceed (above the
legs' always-on base): when the runs open on an event's legs add up to more than that, some of
them have ended. `Pairer` closes the few whose draws add up closest to the excess (two loads
whose offs fell in one second, rather than one larger run that happens to cover both), at this
event when it is a drop its own matches do not explain (most likely their mismeasured off),
else halfway between the last event on those legs that had room for them and this one. One run
that a sag of its draw could explain is kept (a heater warming under a second element). So a
second on of the same device no longer means its first off was missed (a dishwasher's heater
switches on under its running pump), and a 240 V off whose on was seen on one leg only closes
that leg's run: with the other leg's part too, when that part is as large and closes no run of
its own (the same load's other half, whose on hid under another load's step).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from itertools import combinations
from typing import Any

import numpy as np
import numpy.typing as npt

from nilm.records import Event

__all__ = [
    "Activation",
    "DayEnergy",
    "Pairer",
    "always_on_base_w",
    "daily_breakdown",
    "energy_by_device_day",
]

logger = logging.getLogger(__name__)

# How many recent levels of a leg set its always-on base is the minimum of: a few days of events,
# so that a base that changes (a new standby load) is followed.
_BASE_MEMORY_EVENTS = 500
# The share of a drop its matched runs may leave unexplained and still be only their off.
_UNEXPLAINED_SHARE = 0.2


@dataclass(frozen=True, slots=True)
class Activation:
    """One run of one device: from its on event to the off event that closed it.

    An open run has `off_event_id`, `end_ts` and `energy_wh` None; a run that was never closed
    (its off was missed) is given up after `Pairer.max_run_s` with `abandoned` True. A run that
    the legs' power shows to have ended without a matching off (`Pairer`'s floor) has `end_ts`
    and `energy_wh` but no `off_event_id`.
    """

    activation_id: str
    home_id: str
    device: str | None
    legs: str
    on_event_id: str
    start_ts: datetime
    power_w: float
    off_event_id: str | None = None
    end_ts: datetime | None = None
    off_power_w: float | None = None
    energy_wh: float | None = None
    abandoned: bool = False

    @property
    def duration_s(self) -> float | None:
        if self.end_ts is None:
            return None
        return (self.end_ts - self.start_ts).total_seconds()

    def row(self) -> dict[str, Any]:
        """The `activations` table row."""
        return {
            "activation_id": self.activation_id,
            "home_id": self.home_id,
            "device": self.device,
            "legs": self.legs,
            "on_event_id": self.on_event_id,
            "off_event_id": self.off_event_id,
            "start_ts": self.start_ts,
            "end_ts": self.end_ts,
            "power_w": self.power_w,
            "off_power_w": self.off_power_w,
            "duration_s": self.duration_s,
            "energy_wh": self.energy_wh,
            "abandoned": self.abandoned,
        }


class Pairer:
    """Pairs on and off events of one home into activations.

    Parameters
    ----------
    min_ratio, max_ratio
        The accepted range of |off step| / on step (sag makes it less than 1).
    max_run_s
        Runs open longer than this are given up (their off event was missed).
    device_mismatch_cost
        Added to a candidate's cost when its device differs from the off event's (in units of
        |log ratio|).
    floor_tolerance_w, floor_tolerance_ratio
        How far the open runs on an event's legs may exceed the power those legs draw after it
        before runs are closed (the larger of the two: watts, and a share of the runs' sum),
        for steps measured a little off and loads that sag or wander.

    Examples
    --------
    >>> from datetime import UTC, datetime, timedelta
    >>> from nilm.records import Event
    >>> t0 = datetime(2026, 1, 5, 8, tzinfo=UTC)
    >>> def ev(i, s, legs, dp):
    ...     return Event(f"e{i}", "h", t0 + timedelta(seconds=s), legs, dp, 0.0, dp, 0.0, 0.0,
    ...                  0.0, 0.0, dp, 0.0, 120.0)
    >>> p = Pairer()
    >>> _ = p.on_event(ev(1, 0, "a", 500.0), "heater")
    >>> _ = p.on_event(ev(2, 60, "a", 120.0), "fridge")
    >>> closed = p.on_event(ev(3, 100, "a", -300.0), None)  # the heater, sagged
    >>> [(a.on_event_id, a.device, a.duration_s, round(a.energy_wh, 2)) for a in closed]
    [('e1', 'heater', 100.0, 11.11)]
    """

    def __init__(
        self,
        min_ratio: float = 0.45,
        max_ratio: float = 1.4,
        max_run_s: float = 12 * 3600.0,
        device_mismatch_cost: float = 0.5,
        floor_tolerance_w: float = 40.0,
        floor_tolerance_ratio: float = 0.15,
    ) -> None:
        self.min_ratio = min_ratio
        self.max_ratio = max_ratio
        self.max_run_s = max_run_s
        self.device_mismatch_cost = device_mismatch_cost
        self.floor_tolerance_w = floor_tolerance_w
        self.floor_tolerance_ratio = floor_tolerance_ratio
        self.open: dict[str, list[Activation]] = {}
        # Each open run's draw on leg a and leg b (a 240 V run's on event says how it splits).
        self.leg_power: dict[str, tuple[float, float]] = {}
        # Per leg set, when an event on it last showed room for every run open on it.
        self.last_fit: dict[str, datetime] = {}
        # Per leg set, the levels of its recent events: their minimum is the always-on base,
        # which no run accounts for.
        self.recent_levels: dict[str, deque[float]] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pairers pickled (in flow snapshots) before the floor existed have no floor state.
        state.setdefault("floor_tolerance_w", 40.0)
        state.setdefault("floor_tolerance_ratio", 0.15)
        state.setdefault("leg_power", {})
        state.setdefault("last_fit", {})
        state.setdefault("recent_levels", {})
        self.__dict__.update(state)

    def clone(self) -> Pairer:
        return Pairer(
            self.min_ratio,
            self.max_ratio,
            self.max_run_s,
            self.device_mismatch_cost,
            self.floor_tolerance_w,
            self.floor_tolerance_ratio,
        )

    def match(self, event: Event, device: str | None) -> Activation | None:
        """The open run an off event would close; changes nothing."""
        if event.delta_p_w >= 0:
            return None
        return self._best_run(event.legs, -event.delta_p_w, event.ts, device)

    def _best_run(
        self, legs: str, off: float, ts: datetime, device: str | None
    ) -> Activation | None:
        best: tuple[float, int] | None = None
        runs = self.open.get(legs, [])
        for i, run in enumerate(runs):
            ratio = off / max(run.power_w, 1e-9)
            if not self.min_ratio <= ratio <= self.max_ratio:
                continue
            cost = abs(math.log(ratio / 0.97))
            # Among equals the most recent run: an older one most likely lost its off event.
            cost += 0.01 * (ts - run.start_ts).total_seconds() / 3600.0
            if device is not None and run.device is not None and device != run.device:
                cost += self.device_mismatch_cost
            if best is None or cost < best[0]:
                best = (cost, i)
        return runs[best[1]] if best is not None else None

    def on_event(self, event: Event, device: str | None) -> list[Activation]:
        """Open or close runs for `event`; returns the activations that changed.

        An on event opens a run (returned open); an off event closes the best match (returned
        closed); runs older than `max_run_s` are returned abandoned; runs on the event's legs
        that no longer fit under the power those legs draw after it are returned closed, with
        no off event.
        """
        changed = self._pair(event, device)
        # What of a drop no run it closed accounts for: most likely the off of runs that no
        # longer fit (measured too different to match), which then end here.
        unexplained_w = -event.delta_p_w - sum(
            a.off_power_w or 0.0 for a in changed if a.off_event_id == event.event_id
        )
        ends_here = event.delta_p_w < 0 and unexplained_w > _UNEXPLAINED_SHARE * -event.delta_p_w
        return changed + self._enforce_floor(event, ends_here)

    def _pair(self, event: Event, device: str | None) -> list[Activation]:
        # A device may well switch on twice without an off between (a dishwasher's heater under
        # its pump): a second on is no sign that the first run's off was missed. The floor is.
        changed = self._expire(event.ts)
        if event.delta_p_w > 0:
            run = Activation(
                activation_id=event.event_id,
                home_id=event.home_id,
                device=device,
                legs=event.legs,
                on_event_id=event.event_id,
                start_ts=event.ts,
                power_w=event.delta_p_w,
            )
            self.open.setdefault(event.legs, []).append(run)
            self.leg_power[run.activation_id] = _split_by_leg(event)
            return [*changed, run]
        match = self.match(event, device)
        if match is not None:
            return [*changed, self._close(match, event, -event.delta_p_w, device)]
        if event.legs == "ab":
            # A 240 V off whose on was seen on one leg only (its other half fell in the same
            # second as another load's step of the other sign): each leg's part closes that
            # leg's run.
            parts = {"a": -event.delta_p_a_w, "b": -event.delta_p_b_w}
            closing: dict[str, Activation] = {}
            for leg, part in parts.items():
                leg_run = self._best_run(leg, part, event.ts, device) if part > 0 else None
                if leg_run is not None:
                    closing[leg] = leg_run
            if len(closing) == 1:
                ((leg, run),) = closing.items()
                hidden = parts["b" if leg == "a" else "a"]
                if self.min_ratio <= hidden / parts[leg] <= self.max_ratio:
                    # The other leg's part, as large and closing no run of its own, is the half
                    # of the same load whose on hid under that other step: the run drew it all
                    # along (else a stove's run seen on one leg would get half its energy).
                    self._take_out(run)
                    whole = replace(run, legs="ab", power_w=run.power_w + hidden)
                    return [*changed, self._ended(whole, event, parts[leg] + hidden, device)]
            for leg, leg_run in closing.items():
                changed.append(self._close(leg_run, event, parts[leg], device))
        return changed

    def _close(self, run: Activation, event: Event, off: float, device: str | None) -> Activation:
        self._take_out(run)
        return self._ended(run, event, off, device)

    def _take_out(self, run: Activation) -> None:
        self.open[run.legs].remove(run)
        self._forget(run)

    def _ended(self, run: Activation, event: Event, off: float, device: str | None) -> Activation:
        hours = (event.ts - run.start_ts).total_seconds() / 3600.0
        return replace(
            run,
            device=run.device if run.device is not None else device,
            off_event_id=event.event_id,
            end_ts=event.ts,
            off_power_w=off,
            energy_wh=hours * (run.power_w + off) / 2.0,
        )

    def relabel(self, on_event_id: str, device: str) -> Activation | None:
        """Set the device of the open run started by `on_event_id` (after a confirmation)."""
        for runs in self.open.values():
            for i, run in enumerate(runs):
                if run.on_event_id == on_event_id:
                    runs[i] = replace(run, device=device)
                    return runs[i]
        return None

    def _expire(self, now: datetime) -> list[Activation]:
        gone: list[Activation] = []
        limit = timedelta(seconds=self.max_run_s)
        for legs, runs in self.open.items():
            keep = [r for r in runs if now - r.start_ts <= limit]
            gone += [replace(r, abandoned=True) for r in runs if now - r.start_ts > limit]
            self.open[legs] = keep
        return [self._forget(r) for r in gone]

    def _forget(self, run: Activation) -> Activation:
        self.leg_power.pop(run.activation_id, None)
        return run

    def _enforce_floor(self, event: Event, ends_here: bool) -> list[Activation]:
        """Close the runs on `event`'s legs that its legs' power after it leaves no room for.

        They end at `event` when it is a drop that the runs it closed do not account for (most
        likely their own off, measured too different to match), else halfway between the last
        event on these legs that had room for them and this one (when is not known).
        """
        after = event.p_after_w
        # Hand-made events (and sources without levels) carry no levels that agree with their
        # step: they say nothing about the floor.
        if not (math.isfinite(after) and math.isfinite(event.p_before_w)):
            return []
        if abs(after - event.p_before_w - event.delta_p_w) > 1.0 or after < 0:
            return []
        legs = event.legs
        levels = self.recent_levels.setdefault(legs, deque(maxlen=_BASE_MEMORY_EVENTS))
        levels.extend((event.p_before_w, after))
        after -= self._base_w(legs)
        on_legs = [r for run_legs, rs in self.open.items() if set(run_legs) & set(legs) for r in rs]
        load = {r.activation_id: self._power_on(r, legs) for r in on_legs}
        total = sum(load.values())
        allowed = after + max(self.floor_tolerance_w, self.floor_tolerance_ratio * total)
        # The run this event opened is the one thing known to be running.
        runs = [r for r in on_legs if r.on_event_id != event.event_id]
        closed: list[Activation] = []
        last_fit = self.last_fit.get(legs, event.ts)
        end = event.ts if ends_here else last_fit + (event.ts - last_fit) / 2
        while runs and total > allowed:
            chosen = self._runs_that_ended(runs, load, total - after, allowed - after)
            if not chosen:
                break
            for run in chosen:
                runs.remove(run)
                total -= load[run.activation_id]
                self.open[run.legs].remove(run)
                self.leg_power.pop(run.activation_id, None)
                stop = max(end, run.start_ts)
                hours = (stop - run.start_ts).total_seconds() / 3600.0
                closed.append(replace(run, end_ts=stop, energy_wh=hours * run.power_w))
            allowed = after + max(self.floor_tolerance_w, self.floor_tolerance_ratio * total)
        self.last_fit[legs] = event.ts
        return closed

    def _base_w(self, legs: str) -> float:
        """The always-on base of `legs`: the least they drew at recent events (both legs' bases
        added, when lower: 240 V events are rare, so their own levels say little)."""
        base = min(self.recent_levels[legs])
        a, b = self.recent_levels.get("a"), self.recent_levels.get("b")
        if legs == "ab" and a and b:
            base = min(base, min(a) + min(b))
        return base

    def _runs_that_ended(
        self, runs: list[Activation], load: Mapping[str, float], excess: float, slack: float
    ) -> list[Activation]:
        """The runs whose draw best accounts for `excess` watts that the legs no longer draw.

        A few runs at most, whose draws add up closest to the excess while removing all but
        `slack` of it (fewer runs, then more recent ones, among equals): when a drop is two
        loads ending together (a 240 V off merged into a 120 V one), those two, not the one
        larger run that happens to cover the sum. None when the one run that accounts for it
        may just have sagged that far; the largest when no few runs cover it (and go on).
        """
        order = sorted(runs, key=lambda r: (_ts(r), r.activation_id))
        max_size = 3 if len(order) <= 20 else 2 if len(order) <= 60 else 1
        best: tuple[tuple[float, int, float], tuple[Activation, ...]] | None = None
        for size in range(1, max_size + 1):
            for combo in combinations(order, size):
                drawn = sum(load[r.activation_id] for r in combo)
                if drawn < excess - slack:
                    continue
                key = (abs(drawn - excess), size, -max(_ts(r) for r in combo))
                if best is None or key < best[0]:
                    best = (key, combo)
        if best is None:
            return [max(order, key=lambda r: (load[r.activation_id], _ts(r)))]
        chosen = list(best[1])
        if len(chosen) == 1 and excess <= (1.0 - self.min_ratio) * load[chosen[0].activation_id]:
            # The run may have sagged that far (a heater warming): an off that small would still
            # close it, so it may well be running.
            return []
        return chosen

    def _power_on(self, run: Activation, legs: str) -> float:
        """What `run` draws on the legs `legs`."""
        a, b = self.leg_power.get(run.activation_id, _even_split(run))
        return (a if "a" in legs else 0.0) + (b if "b" in legs else 0.0)


def _ts(run: Activation) -> float:
    return run.start_ts.timestamp()


def _even_split(run: Activation) -> tuple[float, float]:
    if run.legs == "a":
        return run.power_w, 0.0
    if run.legs == "b":
        return 0.0, run.power_w
    return run.power_w / 2.0, run.power_w / 2.0


def _split_by_leg(event: Event) -> tuple[float, float]:
    """An on event's step on leg a and leg b: all of it on its leg for a 120 V event; for a
    240 V one, split as its per-leg steps say (evenly when they say nothing usable)."""
    if event.legs == "a":
        return event.delta_p_w, 0.0
    if event.legs == "b":
        return 0.0, event.delta_p_w
    a, b = max(event.delta_p_a_w, 0.0), max(event.delta_p_b_w, 0.0)
    if not (math.isfinite(a) and math.isfinite(b)) or a + b <= 0:
        return event.delta_p_w / 2.0, event.delta_p_w / 2.0
    return event.delta_p_w * a / (a + b), event.delta_p_w * b / (a + b)


def energy_by_device_day(activations: Iterable[Activation]) -> dict[tuple[date, str], float]:
    """Energy in Wh of closed activations by (UTC day of the start, device); unknown is '?'.

    >>> from datetime import UTC, datetime
    >>> a = Activation("x", "h", "oven", "ab", "x", datetime(2026, 1, 5, 18, tzinfo=UTC), 3000.0,
    ...                energy_wh=1500.0)
    >>> energy_by_device_day([a])
    {(datetime.date(2026, 1, 5), 'oven'): 1500.0}
    """
    out: dict[tuple[date, str], float] = {}
    for a in activations:
        if a.energy_wh is None:
            continue
        key = (a.start_ts.date(), a.device or "?")
        out[key] = out.get(key, 0.0) + a.energy_wh
    return out


def always_on_base_w(total_power_w: npt.ArrayLike, quantile: float = 0.02) -> float:
    """The always-on base: a low quantile of total active power (robust to dips and gaps).

    >>> always_on_base_w([150.0] * 95 + [140.0] + [900.0] * 50)
    150.0
    """
    values = np.asarray(total_power_w, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan
    return float(np.quantile(values, quantile))


@dataclass(frozen=True, slots=True)
class DayEnergy:
    """One day's energy: per device, the always-on base, and what no activation explains."""

    day: date
    total_wh: float
    base_wh: float
    devices_wh: dict[str, float]
    unexplained_wh: float


def daily_breakdown(
    activations: Iterable[Activation],
    total_wh_by_day: Mapping[date, float],
    base_w_by_day: Mapping[date, float],
    hours_by_day: Mapping[date, float] | None = None,
) -> list[DayEnergy]:
    """Split each day's metered energy into devices, the always-on base and the unexplained rest.

    `total_wh_by_day` is the metered energy (from readings), `base_w_by_day` the always-on base
    (`always_on_base_w`), `hours_by_day` the hours measured (24 by default).

    >>> from datetime import UTC, datetime
    >>> d = date(2026, 1, 5)
    >>> a = Activation("x", "h", "oven", "ab", "x", datetime(2026, 1, 5, 18, tzinfo=UTC), 3000.0,
    ...                energy_wh=1500.0)
    >>> day = daily_breakdown([a], {d: 6000.0}, {d: 150.0})[0]
    >>> (day.base_wh, day.devices_wh, day.unexplained_wh)
    (3600.0, {'oven': 1500.0}, 900.0)
    """
    per = energy_by_device_day(activations)
    out = []
    for day in sorted(total_wh_by_day):
        hours = 24.0 if hours_by_day is None else hours_by_day.get(day, 24.0)
        base = base_w_by_day.get(day, 0.0) * hours
        devices = {dev: wh for (d, dev), wh in sorted(per.items()) if d == day}
        total = total_wh_by_day[day]
        out.append(DayEnergy(day, total, base, devices, total - base - sum(devices.values())))
    return out
