"""A US split-phase household that draws realistic power on each leg and knows every switch.

The simulator is the embedded default wherever there is no hardware: the demo, the tests and the
benchmarks. Each appliance is a small declarative description (`Appliance`) plus a schedule
drawn from a seeded generator, so a given seed and day always give the same readings. Loads
carry what real panels show: motor inrush, two-stage soft starts, heating elements whose draw sags
as they warm, thermostatic cycling, poor power factor of electronics, 240 V loads that step both
legs together, meter noise, voltage wander, timestamp jitter and logger gaps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from nilm.records import READING_COLUMNS, ReadingBatch, TruthEvent, from_epoch_us, to_epoch_us

__all__ = [
    "APPLIANCES",
    "DEVICES",
    "Appliance",
    "HouseholdSimulator",
    "SimulatorConfig",
    "small_steps_under_load",
]

DAY_S = 86_400
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Appliance:
    """How one device draws power.

    `power_w` is the steady active power summed over its legs (a 240 V load splits it evenly).
    `inrush_x` multiplies the first second's power (motors); `ramp_s` spreads the rise over a
    soft start in two stages; `sag` is the fraction by which a heating element's draw falls over
    a run; `noise_w` is the load's own flicker.
    """

    name: str
    legs: str
    power_w: float
    pf: float
    inrush_x: float = 1.0
    ramp_s: int = 0
    sag: float = 0.0
    noise_w: float = 1.0


APPLIANCES = (
    Appliance("fridge", "a", 125.0, 0.80, inrush_x=4.5, noise_w=1.5),
    Appliance("heat_pump", "ab", 3000.0, 0.95, inrush_x=1.6, ramp_s=4, noise_w=8.0),
    Appliance("water_heater", "ab", 4500.0, 1.00, sag=0.03, noise_w=4.0),
    Appliance("ev_charger", "ab", 7200.0, 0.99, ramp_s=15, noise_w=15.0),
    Appliance("oven", "ab", 3000.0, 1.00, sag=0.05, noise_w=4.0),
    Appliance("microwave", "b", 1250.0, 0.95, noise_w=6.0),
    Appliance("dishwasher", "a", 1100.0, 0.98, sag=0.04, noise_w=3.0),
    Appliance("washer", "b", 420.0, 0.62, inrush_x=2.5, noise_w=6.0),
    Appliance("dryer", "ab", 5000.0, 1.00, sag=0.06, noise_w=6.0),
    Appliance("dryer_motor", "a", 260.0, 0.70, inrush_x=3.0, noise_w=2.0),
    Appliance("lights", "b", 180.0, 0.92, noise_w=0.8),
    Appliance("tv", "b", 150.0, 0.60, noise_w=2.0),
    Appliance("computer", "a", 210.0, 0.65, noise_w=3.0),
    # Not in the default roster: arrives when `SimulatorConfig.novel_device` names it.
    Appliance("well_pump", "ab", 1000.0, 0.80, inrush_x=3.0, noise_w=4.0),
)
_BY_NAME = {a.name: a for a in APPLIANCES}
# The devices a user would name: the dryer's motor is part of the dryer.
DEVICES = tuple(a.name for a in APPLIANCES if a.name not in ("well_pump", "dryer_motor"))
BASE_LOAD_W = {"a": 85.0, "b": 60.0}
BASE_PF = {"a": 0.90, "b": 0.85}


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """What household to simulate.

    `novel_device` joins the roster from `novel_from_day` (a device the user never labelled);
    `degrade_device` draws more power and runs longer from `degrade_from_day`, growing linearly
    to `degrade_factor` over `degrade_ramp_days` (a failing fridge compressor).
    """

    seed: int = 0
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    home_id: str = "home"
    devices: tuple[str, ...] = DEVICES
    novel_device: str | None = None
    novel_from_day: int | None = None
    degrade_device: str | None = None
    degrade_from_day: int | None = None
    degrade_factor: float = 1.25
    degrade_ramp_days: float = 7.0
    meter_noise_w: float = 1.5
    jitter_s: float = 0.12
    gaps_per_day: float = 80.0


@dataclass(slots=True)
class _Run:
    """One run of one appliance: its start second (since the simulation's start) and profile.

    `profile` is the active power over the run (summed over the appliance's legs).
    """

    appliance: Appliance
    start_s: int
    profile: FloatArray
    steps: list[tuple[int, str, float]] = field(default_factory=list)


def _run(appliance: Appliance, start_s: int, duration_s: int, scale: float = 1.0) -> _Run:
    a = appliance
    n = max(int(duration_s), 3)
    p = np.full(n, a.power_w * scale)
    if a.sag:
        p *= 1.0 - a.sag * (1.0 - np.exp(-np.arange(n) / 240.0))
    if a.ramp_s:
        # Two stages, as EV chargers and inverter compressors climb: to 40 %, hold, then full.
        r = min(a.ramp_s, n - 1)
        first = max(r // 3, 1)
        hold = max(r // 3, 1)
        ramp = np.ones(n)
        ramp[:first] = np.linspace(0.15, 0.4, first)
        ramp[first : first + hold] = 0.4
        ramp[first + hold : r] = np.linspace(0.4, 1.0, r - first - hold)
        p *= ramp
    if a.inrush_x > 1.0:
        p[0] *= a.inrush_x
    steps = [(0, "on", a.power_w * scale), (n, "off", -float(p[-1]))]
    return _Run(a, start_s, p, steps)


def _cycles(
    appliance: Appliance,
    rng: np.random.Generator,
    window: tuple[float, float],
    on_s: tuple[float, float],
    off_s: tuple[float, float],
    day0: int,
    scale: float = 1.0,
    stretch: float = 1.0,
) -> list[_Run]:
    """Thermostatic cycling inside `window` (seconds of the day): every run ends inside it.

    Starting an off-period in from the window's edge keeps runs of consecutive days apart.
    """
    runs: list[_Run] = []
    t = window[0] + rng.uniform(*off_s)
    while True:
        on = rng.uniform(*on_s) * stretch
        if t + on >= window[1]:
            return runs
        runs.append(_run(appliance, day0 + int(t), int(on), scale))
        t += on + rng.uniform(*off_s)


class HouseholdSimulator:
    """Readings and ground truth of a simulated US split-phase home, one day at a time.

    Parameters
    ----------
    config
        Which household; `SimulatorConfig()` by default.

    Examples
    --------
    >>> sim = HouseholdSimulator(SimulatorConfig(seed=3))
    >>> batch, truth = sim.day(0)
    >>> len(batch) > 86_000, truth == sim.day(0)[1]
    (True, True)
    >>> {t.device for t in truth} <= set(DEVICES), "fridge" in {t.device for t in truth}
    (True, True)
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        unknown = [
            d for d in (*self.config.devices, self.config.novel_device) if d and d not in _BY_NAME
        ]
        if unknown:
            raise ValueError(f"unknown devices {unknown}; known: {sorted(_BY_NAME)}")

    # -- schedules ---------------------------------------------------------------------------

    def _degrade(self, device: str, day: int) -> float:
        c = self.config
        if c.degrade_device != device or c.degrade_from_day is None or day < c.degrade_from_day:
            return 1.0
        progress = min((day - c.degrade_from_day + 0.5) / c.degrade_ramp_days, 1.0)
        return 1.0 + (c.degrade_factor - 1.0) * progress

    def _roster(self, day: int) -> tuple[str, ...]:
        c = self.config
        roster = c.devices
        if c.novel_device and (c.novel_from_day is None or day >= c.novel_from_day):
            roster = (*roster, c.novel_device)
        return roster

    def _runs(self, day: int) -> list[_Run]:
        """Runs that start on `day`; some end after midnight."""
        if day < 0:
            return []
        c = self.config
        d0 = day * DAY_S
        weekend = (c.start + timedelta(days=day)).weekday() >= 5
        runs: list[_Run] = []
        for index, name in enumerate(self._roster(day)):
            a = _BY_NAME[name]
            rng = np.random.default_rng([c.seed, index, day, 7919])
            k = self._degrade(name, day)
            runs += self._schedule(a, rng, d0, weekend, k)
        return runs

    def _schedule(
        self, a: Appliance, rng: np.random.Generator, d0: int, weekend: bool, k: float
    ) -> list[_Run]:
        h = 3600.0
        home_from = (9.0 if weekend else 17.5) * h
        u = rng.uniform
        name = a.name
        if name == "fridge":
            return _cycles(a, rng, (0, DAY_S), (780, 1020), (1200, 1500), d0, k, k)
        if name == "heat_pump":
            return _cycles(a, rng, (5.5 * h, 22.5 * h), (900, 2400), (2400, 6000), d0)
        if name == "well_pump":
            return _cycles(a, rng, (6 * h, 22 * h), (90, 240), (2400, 7200), d0)
        if name == "water_heater":
            starts = [u(6.2, 7.5) * h, u(19, 21.5) * h]
            return [_run(a, d0 + int(s), int(u(900, 2100))) for s in starts]
        if name == "ev_charger":
            if rng.random() < 0.25:
                return []
            return [_run(a, d0 + int(u(18.5, 22.5) * h), int(u(1.5, 4) * h))]
        if name == "oven":
            if rng.random() < 0.4:
                return []
            start = u(17.5, 18.5) * h
            runs = [_run(a, d0 + int(start), int(u(540, 720)))]
            return runs + _cycles(
                a, rng, (start + 900, start + 900 + 1800), (60, 150), (90, 200), d0
            )
        if name == "microwave":
            starts = [u(7, 8.5), u(12, 13), u(18, 20.5)][: int(rng.integers(1, 4))]
            return [_run(a, d0 + int(s * h), int(u(60, 300))) for s in starts]
        if name == "dishwasher":
            if rng.random() < 0.3:
                return []
            start = u(20, 22) * h
            return [_run(a, d0 + int(start + i * 1800), int(u(900, 1300))) for i in range(2)]
        if name == "washer":
            if rng.random() < 0.5 and not weekend:
                return []
            start = u(9, 11) * h if weekend else u(18, 19.5) * h
            return _cycles(a, rng, (start, start + 2400), (120, 360), (60, 180), d0)
        if name == "dryer":
            if rng.random() < 0.5 and not weekend:
                return []
            start = (u(11.5, 12.5) if weekend else u(20, 20.8)) * h
            motor = _run(_BY_NAME["dryer_motor"], d0 + int(start), 3300)
            heat = _cycles(a, rng, (start + 30, start + 3000), (240, 480), (90, 240), d0)
            return [motor, *heat]
        if name == "lights":
            evening = _run(a, d0 + int(u(home_from / h, 19.5) * h), int(u(3, 5) * h))
            morning = _run(a, d0 + int(u(6, 6.5) * h), int(u(1200, 3000)))
            return [morning, evening]
        if name == "tv":
            return [_run(a, d0 + int(u(19, 20.5) * h), int(u(1.5, 3) * h))]
        if name == "computer":
            span = (
                (u(9, 10), u(15, 17)) if weekend or rng.random() < 0.4 else (u(20, 21), u(22, 23))
            )
            return [_run(a, d0 + int(span[0] * h), int((span[1] - span[0]) * h))]
        raise ValueError(f"no schedule for {name!r}")

    # -- rendering ---------------------------------------------------------------------------

    def day(self, index: int) -> tuple[ReadingBatch, list[TruthEvent]]:
        """Readings and truth events of day `index` (0 is the day of `config.start`)."""
        c = self.config
        d0 = index * DAY_S
        p = {"a": np.zeros(DAY_S), "b": np.zeros(DAY_S)}
        q = {"a": np.zeros(DAY_S), "b": np.zeros(DAY_S)}
        truth: list[TruthEvent] = []
        start_us = to_epoch_us(c.start)
        for run in self._runs(index - 1) + self._runs(index):
            a = run.appliance
            lo, hi = run.start_s - d0, run.start_s - d0 + len(run.profile)
            if hi <= 0 or lo >= DAY_S:
                continue
            seg = run.profile[max(-lo, 0) : len(run.profile) - max(hi - DAY_S, 0)]
            rng = np.random.default_rng([c.seed, run.start_s, 104729])
            seg = seg + rng.normal(0.0, a.noise_w, len(seg)) * (seg > 0)
            tan_phi = np.sqrt(1.0 / (a.pf * a.pf) - 1.0)
            for leg in a.legs:
                p[leg][max(lo, 0) : min(hi, DAY_S)] += seg / len(a.legs)
                q[leg][max(lo, 0) : min(hi, DAY_S)] += seg * tan_phi / len(a.legs)
            for offset, kind, delta in run.steps:
                t = run.start_s + offset
                if d0 <= t < d0 + DAY_S:
                    device = "dryer" if a.name == "dryer_motor" else a.name
                    ts = from_epoch_us(start_us + t * 1_000_000)
                    truth.append(TruthEvent(ts, device, a.legs, kind, round(delta, 1)))
        truth.sort(key=lambda e: (e.ts, e.device))
        return self._meter(index, p, q), truth

    def _meter(
        self, index: int, p: dict[str, FloatArray], q: dict[str, FloatArray]
    ) -> ReadingBatch:
        """What the Shelly reports: noise, voltage, current, pf, frequency, jitter and gaps."""
        c = self.config
        rng = np.random.default_rng([c.seed, index, 15485863])
        t = np.arange(DAY_S) + index * DAY_S
        columns: dict[str, FloatArray] = {}
        for j, leg in enumerate("ab"):
            base_p = BASE_LOAD_W[leg] * (1.0 + 0.05 * np.sin(2 * np.pi * t / DAY_S + j))
            base_q = base_p * np.sqrt(1.0 / BASE_PF[leg] ** 2 - 1.0)
            act = p[leg] + base_p + rng.normal(0.0, c.meter_noise_w, DAY_S)
            react = q[leg] + base_q + rng.normal(0.0, c.meter_noise_w, DAY_S)
            aprt = np.sqrt(act * act + react * react)
            wander = np.cumsum(rng.normal(0.0, 0.01, DAY_S))
            wander -= np.linspace(0.0, wander[-1], DAY_S)  # back to nominal at midnight
            volts = 121.0 + 1.2 * np.sin(2 * np.pi * t / DAY_S + 0.7 * j) + wander
            volts -= 0.012 * aprt / 120.0
            volts = np.round(volts + rng.normal(0.0, 0.05, DAY_S), 1)
            columns[f"{leg}_voltage"] = volts
            columns[f"{leg}_current"] = np.round(aprt / volts, 3)
            columns[f"{leg}_act_power"] = np.round(act, 1)
            columns[f"{leg}_aprt_power"] = np.round(aprt, 1)
            columns[f"{leg}_pf"] = np.round(np.clip(act / np.maximum(aprt, 1e-9), 0.0, 1.0), 2)
            columns[f"{leg}_freq"] = np.round(60.0 + rng.normal(0.0, 0.01, DAY_S), 2)
        keep = np.ones(DAY_S, dtype=bool)
        for start in rng.integers(0, DAY_S, int(rng.poisson(c.gaps_per_day))).tolist():
            keep[start : start + int(rng.choice([1, 1, 1, 2, 3, 8]))] = False
        offsets = rng.uniform(0.0, c.jitter_s, DAY_S)
        ts_us = to_epoch_us(c.start) + (t * 1_000_000 + (offsets * 1e6).astype(np.int64))
        batch = ReadingBatch(c.home_id, t.astype(np.int64), ts_us.astype(np.int64), columns)
        return batch[keep]

    def run(self, days: float) -> tuple[ReadingBatch, list[TruthEvent]]:
        """`days` of readings (a fraction cuts the last day) and their truth, in one batch."""
        batches: list[ReadingBatch] = []
        truth: list[TruthEvent] = []
        for batch, events in self.iter_batches(days, DAY_S):
            batches.append(batch)
            truth += events
        return ReadingBatch.concat(batches), truth

    def iter_batches(
        self, days: float | None, batch_s: int = 3600
    ) -> Iterator[tuple[ReadingBatch, list[TruthEvent]]]:
        """Readings in batches of `batch_s` seconds, with the truth events inside each.

        `days=None` goes on for ever.
        """
        end_s = None if days is None else int(days * DAY_S)
        index = 0
        start_us = to_epoch_us(self.config.start)
        while end_s is None or index * DAY_S < end_s:
            batch, truth = self.day(index)
            for lo in range(0, DAY_S, batch_s):
                hi = lo + batch_s
                if end_s is not None:
                    hi = min(hi, end_s - index * DAY_S)
                if hi <= lo:
                    return
                s0, s1 = index * DAY_S + lo, index * DAY_S + hi
                mask = (batch.seq >= s0) & (batch.seq < s1)
                inside = _between(truth, start_us + s0 * 1_000_000, start_us + s1 * 1_000_000)
                yield batch[mask], inside
            index += 1


def _between(truth: list[TruthEvent], lo_us: int, hi_us: int) -> list[TruthEvent]:
    return [e for e in truth if lo_us <= to_epoch_us(e.ts) < hi_us]



def small_steps_under_load(
    hours: float,
    seed: int = 0,
    load_w: float = 3760.0,
    noise_w: float = 15.0,
    home_id: str = "hard",
    start: datetime = datetime(2026, 1, 5, 12, tzinfo=UTC),
) -> tuple[ReadingBatch, list[TruthEvent]]:
    """The detectors' hard case: 50–100 W fridge steps on leg a under a noisy `load_w` draw.

    A charging EV's flicker (`noise_w`) is as large as a fridge-sized step is small, so no
    single jump stands out; only a change of level does.

    Examples
    --------
    >>> batch, truth = small_steps_under_load(1.0, seed=3)
    >>> kinds = sorted({e.kind for e in truth})
    >>> len(batch), kinds, all(50 <= abs(e.delta_p_w) <= 100 for e in truth)
    (3600, ['off', 'on'], True)
    """
    rng = np.random.default_rng(seed)
    n = int(hours * 3600)
    t0_us = to_epoch_us(start)
    a = np.full(n, load_w)
    truth: list[TruthEvent] = []
    t, size = 300, 0.0
    while t < n - 400:
        on = not truth or truth[-1].kind == "off"
        size = float(rng.uniform(50, 100)) if on else size
        a[t:] += size if on else -size
        ts = from_epoch_us(t0_us + t * 1_000_000)
        truth.append(TruthEvent(ts, "fridge", "a", "on" if on else "off", size if on else -size))
        t += int(rng.uniform(120, 600))
    cols = {c: np.full(n, 60.0 if c.endswith("freq") else 120.0) for c in READING_COLUMNS}
    cols["a_act_power"] = a + rng.normal(0.0, noise_w, n)
    cols["b_act_power"] = 150.0 + rng.normal(0.0, 1.5, n)
    for leg in "ab":
        cols[f"{leg}_aprt_power"] = cols[f"{leg}_act_power"] / 0.95
        cols[f"{leg}_pf"] = np.full(n, 0.95)
    ts_us = t0_us + np.arange(n) * 1_000_000 + rng.integers(0, 300_000, n)
    return ReadingBatch(home_id, np.arange(n), ts_us.astype(np.int64), cols), truth
