"""A US split-phase household that draws power on each leg as measured appliances do.

The simulator is the embedded default wherever there is no hardware: the demo, the tests and the
benchmarks. Each appliance is a small declarative description (`Appliance`) plus a programme and
a schedule drawn from a seeded generator, so a given seed and day always give the same readings.
Loads carry what real panels show at 1 Hz:

- motor inrush that decays over seconds (a fridge compressor: 884 -> 305 -> 141 -> 94 -> 80 W);
- two-stage soft starts (an EV charger), heating elements whose draw sags as they warm;
- draw that wanders with content or load (a TV's picture, a PC's processor, a washer's drum);
- multi-state programmes (a washer heating between drum movements and spinning, a dishwasher, a
  dryer's 240 V heater cycling under its 120 V motor, oven and stove thermostats, a microwave at
  partial power) and thermostatic cycling (fridge, freezer, heat pump);
- staircase shut-downs (128 -> 96 -> 80 -> 32 -> 0 W) and standby draw that stays after "off";
- several appliances switching in the same second, on different legs;
- 240 V loads that step both legs together, poor power factor of motors and electronics, meter
  noise, voltage wander, timestamp jitter and logger gaps.

The truth (`TruthEvent`) lists the changes of state of a device, and nothing else: a decaying
inrush, a wander or the fading of standby draw is not an event. A step's `delta_p_w` is the
device's settled change of active power (after the inrush has decayed, the ramp has finished),
its `ts` the second the step begins and its `ramp_s` how long the change takes to complete, so a
staircase or a soft start is one event. `kind` is `on` when the device was idle before (off or
in standby), `off` when it is idle after, and `step` between two working states (a washer's
heater under its drum motor, an oven's element under its fan). `HouseholdSimulator.device_power`
gives each device's own power, second by second (sub-metered truth).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
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
# A change of a device's draw smaller than this is not an event (standby fading, a fan's flicker).
_MIN_STEP_W = 5.0
# A device drawing no more than this is idle: off, or in standby.
_IDLE_W = 10.0
# The TV's shut-down as a real set shows it at 1 Hz: 128 -> 96 -> 80 -> 32 -> standby.
_TV_STAIRS = (0.75, 0.62, 0.25)
_PC_STAIRS = (0.8, 0.62, 0.4, 0.15)


@dataclass(frozen=True, slots=True)
class Appliance:
    """How one device's main load draws power.

    `power_w` is the steady active power summed over its legs (a 240 V load splits it evenly).
    `inrush_x` is the first second's power over the steady power (motors), decaying with time
    constant `inrush_tau_s` (one second only when it is 0); `ramp_s` spreads the rise over a soft
    start in two stages; `sag` is the fraction by which a heating element's draw falls over a run;
    `noise_w` is the load's own flicker; `wander_w` how far its draw moves with content or load;
    `standby_w` the draw that stays after it is switched off; `stairs` the fractions of its level
    it passes through, one per second, when it shuts down.
    """

    name: str
    legs: str
    power_w: float
    pf: float
    inrush_x: float = 1.0
    inrush_tau_s: float = 0.0
    ramp_s: int = 0
    sag: float = 0.0
    noise_w: float = 1.0
    wander_w: float = 0.0
    standby_w: float = 0.0
    stairs: tuple[float, ...] = ()


# fmt: off
APPLIANCES = (
    Appliance("fridge", "a", 95.0, 0.80, inrush_x=9.0, inrush_tau_s=0.8, sag=0.05, noise_w=1.5),
    Appliance("freezer", "b", 70.0, 0.70, inrush_x=5.0, inrush_tau_s=0.6, sag=0.04, noise_w=1.2),
    Appliance("heat_pump", "ab", 3000.0, 0.95, inrush_x=2.0, inrush_tau_s=1.5, noise_w=8.0),
    Appliance("water_heater", "ab", 4500.0, 1.00, sag=0.03, noise_w=4.0),
    Appliance("ev_charger", "ab", 7200.0, 0.99, ramp_s=15, noise_w=15.0),
    Appliance("oven", "ab", 3000.0, 1.00, sag=0.05, noise_w=4.0),
    Appliance("stove", "ab", 1800.0, 1.00, sag=0.04, noise_w=3.0),
    Appliance("microwave", "b", 1150.0, 0.95, inrush_x=1.4, noise_w=6.0),
    Appliance("dishwasher", "a", 1100.0, 0.98, sag=0.04, noise_w=3.0, standby_w=2.0),
    Appliance("washer", "b", 150.0, 0.55, inrush_x=2.5, inrush_tau_s=0.7, noise_w=4.0,
              wander_w=20.0, standby_w=3.0),
    Appliance("dryer", "ab", 5000.0, 1.00, sag=0.06, noise_w=6.0),
    Appliance("vacuum", "b", 1200.0, 0.95, inrush_x=1.8, inrush_tau_s=1.5, noise_w=8.0,
              wander_w=30.0),
    Appliance("lights", "b", 180.0, 0.92, noise_w=0.8),
    Appliance("tv", "b", 150.0, 0.60, ramp_s=2, noise_w=2.0, wander_w=45.0, standby_w=2.0,
              stairs=_TV_STAIRS),
    Appliance("computer", "a", 150.0, 0.65, noise_w=3.0, wander_w=50.0, standby_w=4.0,
              stairs=_PC_STAIRS),
    # Not in the default roster: arrives when `SimulatorConfig.novel_device` names it.
    Appliance("well_pump", "ab", 1000.0, 0.80, inrush_x=3.5, inrush_tau_s=1.2, noise_w=4.0),
)
# fmt: on
_BY_NAME = {a.name: a for a in APPLIANCES}
DEVICES = tuple(a.name for a in APPLIANCES if a.name != "well_pump")
BASE_LOAD_W = {"a": 85.0, "b": 60.0}
BASE_PF = {"a": 0.90, "b": 0.85}
# Parts of programmes, as (legs, W, pf): a dryer's 120 V drum motor, a dishwasher's pump...
# A washer's 240 V heater draws 2-3.5 kW, drawn per wash: (legs, pf).
_WASHER_HEATER = ("ab", 1.0)
_DRYER_MOTOR = ("a", 260.0, 0.70)
_DISHWASHER_PUMP = ("a", 70.0, 0.70)
_MICROWAVE_FAN = ("b", 90.0, 0.60)
_OVEN_FAN = ("a", 40.0, 0.70)
_HEAT_PUMP_FAN = ("ab", 180.0, 0.70)
_FRIDGE_DEFROST_W = 450.0
# Devices a user moves about: one of them may switch in the same second as another device.
_MOVABLE = ("tv", "computer", "lights", "microwave", "vacuum")


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


# -- one run of one device -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    """A change of state inside a run: where it begins, on which legs, how long it takes.

    `settle_s` is how long an inrush needs to decay before the step's size can be read.
    """

    offset: int
    legs: str
    ramp_s: int
    settle_s: int


@dataclass(slots=True)
class _Run:
    """One run of one device from `start_s` (seconds since the simulation's start).

    `p` and `q` are the noise-free active and reactive power per leg over the run; `steps` its
    changes of state as (offset, legs, ramp_s, delta_p_w, kind).
    """

    device: str
    start_s: int
    p: dict[str, FloatArray]
    q: dict[str, FloatArray]
    steps: list[tuple[int, str, int, float, str]]
    noise_w: float

    @property
    def length_s(self) -> int:
        return len(next(iter(self.p.values())))


class _Programme:
    """Builds one run from parts (a motor, a heater, a fan), each switched on and off in it."""

    def __init__(self, device: str, noise_w: float) -> None:
        self.device = device
        self.noise_w = noise_w
        self.parts: list[tuple[int, str, FloatArray, float]] = []
        self.steps: dict[int, _Step] = {}

    def add(
        self,
        lo: float,
        hi: float,
        watts: float,
        pf: float,
        legs: str,
        *,
        inrush_x: float = 1.0,
        tau_s: float = 0.0,
        ramp_s: int = 0,
        two_stage: bool = False,
        sag: float = 0.0,
        wander: FloatArray | None = None,
        stairs: tuple[float, ...] = (),
        events: bool = True,
    ) -> None:
        """A part drawing `watts` over [lo, hi) seconds of the run, with its start and end as
        changes of state unless `events` is False (standby draw, which comes and fades unseen)."""
        lo_i, hi_i = int(lo), int(hi)
        n = max(hi_i - lo_i, len(stairs) + 2)
        t = np.arange(n, dtype=np.float64)
        p = np.full(n, float(watts))
        if sag:
            p *= 1.0 - sag * (1.0 - np.exp(-t / 240.0))
        if wander is not None:
            p += wander[:n]
        r = min(ramp_s, n - len(stairs) - 1)
        if r > 0:
            shape = np.ones(n)
            if two_stage:
                # As EV chargers and inverter compressors climb: to 40 %, hold, then full.
                first = hold = max(r // 3, 1)
                shape[:first] = np.linspace(0.15, 0.4, first)
                shape[first : first + hold] = 0.4
                shape[first + hold : r] = np.linspace(0.4, 1.0, r - first - hold)
            else:
                shape[:r] = np.arange(1, r + 1) / (r + 1)
            p *= shape
        if inrush_x > 1.0:
            if tau_s > 0.0:
                p *= 1.0 + (inrush_x - 1.0) * np.exp(-t / tau_s)
            else:
                p[0] *= inrush_x
        if stairs:
            k = len(stairs)
            p[n - k :] = p[n - k - 1] * np.asarray(stairs)
        np.maximum(p, 0.0, out=p)
        tan_phi = math.sqrt(1.0 / (pf * pf) - 1.0)
        self.parts.append((lo_i, legs, p, tan_phi))
        if events:
            settle = 0 if inrush_x <= 1.0 else math.ceil(8.0 * tau_s) if tau_s > 0.0 else 1
            self._edge(lo_i, legs, max(r, 0), settle)
            self._edge(lo_i + n - len(stairs), legs, len(stairs), 0)

    def _edge(self, offset: int, legs: str, ramp_s: int, settle_s: int) -> None:
        old = self.steps.get(offset)
        if old is not None:
            legs = old.legs + legs
            ramp_s, settle_s = max(ramp_s, old.ramp_s), max(settle_s, old.settle_s)
        merged = "".join(leg for leg in "ab" if leg in legs)
        self.steps[offset] = _Step(offset, merged, ramp_s, settle_s)

    def build(self, start_s: int) -> _Run:
        """The run starting at `start_s`, with each step's settled size and its kind."""
        n = max(lo + len(p) for lo, _, p, _ in self.parts) + 1
        legs = "".join(leg for leg in "ab" if any(leg in part[1] for part in self.parts))
        p_leg = {leg: np.zeros(n) for leg in legs}
        q_leg = {leg: np.zeros(n) for leg in legs}
        for lo, part_legs, p, tan_phi in self.parts:
            share = p / len(part_legs)
            for leg in part_legs:
                p_leg[leg][lo : lo + len(p)] += share
                q_leg[leg][lo : lo + len(p)] += share * tan_phi
        total = sum(p_leg.values(), np.zeros(n))
        offsets = sorted(self.steps)
        raw: list[tuple[int, str, int, float]] = []
        for i, o in enumerate(offsets):
            s = self.steps[o]
            limit = offsets[i + 1] - 1 if i + 1 < len(offsets) else n - 1
            after = min(o + s.ramp_s + s.settle_s, limit)
            before = total[o - 1] if o > 0 else 0.0
            delta = float(total[max(after, o)] - before)
            if abs(delta) >= _MIN_STEP_W:
                raw.append((o, s.legs, s.ramp_s, round(delta, 1)))
        # On from idle, off to idle (standby counts as idle), a step between two working states.
        steps = []
        for o, lg, r, d in raw:
            before = total[o - 1] if o > 0 else 0.0
            kind = "on" if before <= _IDLE_W else "off" if before + d <= _IDLE_W else "step"
            steps.append((o, lg, r, d, kind))
        return _Run(self.device, start_s, p_leg, q_leg, steps, self.noise_w)


# -- what wanders --------------------------------------------------------------------------


def _piecewise(
    rng: np.random.Generator, n: int, mean_s: float, levels: FloatArray | None = None,
    amp: float = 1.0, smooth_s: int = 3,
) -> FloatArray:  # fmt: skip
    """Levels held for exponential spells of mean `mean_s` seconds, eased over `smooth_s`."""
    k = int(n / mean_s) + 8
    spells = np.maximum(rng.exponential(mean_s, k).astype(np.int64), 1)
    values = levels[:k] if levels is not None else rng.uniform(-amp, amp, k)
    repeats = -(-n // int(spells.sum()))  # rarely more than one: spells are drawn generously
    out = np.repeat(np.tile(values, repeats), np.tile(spells, repeats))[:n]
    if smooth_s > 1:
        kernel = np.ones(smooth_s) / smooth_s
        padded = np.concatenate([np.full(smooth_s - 1, out[0]), out])
        out = np.convolve(padded, kernel, mode="valid")[:n]
    return out.astype(np.float64)


def _content_wander(rng: np.random.Generator, n: int, amp: float) -> FloatArray:
    """A TV's draw following the picture: scene after scene, each a little brighter or darker
    than the last, wandering within +/- `amp` (a random walk folded back at the bounds)."""
    k = int(n / 12.0) + 8
    walk = np.cumsum(rng.normal(0.0, amp / 3.0, k)) + rng.uniform(-amp, amp)
    folded = amp - np.abs(np.mod(walk + amp, 4.0 * amp) - 2.0 * amp)
    return _piecewise(rng, n, 12.0, levels=folded, smooth_s=3)


def _load_wander(rng: np.random.Generator, n: int, amp: float) -> FloatArray:
    """A PC's draw following its processor: idle, with bursts of work of a few seconds."""
    k = int(n / 10.0) + 8
    busy = rng.random(k) < 0.3
    work = rng.uniform(0.15 * amp, 0.8 * amp, k)
    levels = np.where(busy, work, rng.uniform(-0.05 * amp, 0.05 * amp, k))
    return _piecewise(rng, n, 10.0, levels=levels, smooth_s=2)


def _drum_wander(rng: np.random.Generator, n: int, amp: float) -> FloatArray:
    """A washer's drum turning one way, pausing, turning back: the draw swings every ~10 s."""
    k = int(n / 5) + 8
    levels = np.where(np.arange(k) % 2 == 0, 1.0, -1.0) * rng.uniform(0.5 * amp, amp, k)
    return _piecewise(rng, n, 5.0, levels=levels, smooth_s=2)


# -- programmes ----------------------------------------------------------------------------


def _simple(a: Appliance, duration_s: float, scale: float = 1.0) -> _Programme:
    """One part with the appliance's own shape: inrush, soft start, sag."""
    prog = _Programme(a.name, a.noise_w)
    prog.add(0, duration_s, a.power_w * scale, a.pf, a.legs, inrush_x=a.inrush_x,
             tau_s=a.inrush_tau_s, ramp_s=a.ramp_s, two_stage=a.ramp_s > 5, sag=a.sag)  # fmt: skip
    return prog


def _wandering(a: Appliance, rng: np.random.Generator, duration_s: float) -> _Programme:
    """TV or PC: wanders with content while on, shuts down by a staircase, leaves standby."""
    n = int(duration_s)
    wander = _content_wander if a.name == "tv" else _load_wander
    amp = a.wander_w * rng.uniform(0.7, 1.3)
    prog = _Programme(a.name, a.noise_w)
    level = a.power_w * rng.uniform(0.85, 1.15) - a.standby_w
    prog.add(0, n, level, a.pf, a.legs, ramp_s=a.ramp_s, wander=wander(rng, n, amp),
             stairs=a.stairs)  # fmt: skip
    prog.add(0, n + rng.uniform(2, 6) * 3600, a.standby_w, 0.5, a.legs, events=False)
    return prog


def _cycle_times(
    rng: np.random.Generator,
    window: tuple[float, float],
    on_s: tuple[float, float],
    off_s: tuple[float, float],
    stretch: float = 1.0,
) -> list[tuple[float, float]]:
    """(start, duration) of thermostatic cycles inside `window`: every run ends inside it.

    Starting an off-period in from the window's edge keeps runs of consecutive days apart.
    """
    out: list[tuple[float, float]] = []
    t = window[0] + rng.uniform(*off_s)
    while True:
        on = rng.uniform(*on_s) * stretch
        if t + on >= window[1]:
            return out
        out.append((t, on))
        t += on + rng.uniform(*off_s)


def _fridge(
    a: Appliance, rng: np.random.Generator, d0: int, k: float
) -> list[tuple[int, _Programme]]:
    """Compressor cycles with a decaying inrush, and a defrost heater once a day."""
    cycles = _cycle_times(rng, (0, DAY_S), (780, 1020), (1200, 1500), k)
    defrost = rng.uniform(1.0, 22.0) * 3600.0
    defrost_s = rng.uniform(1200, 1800)
    out: list[tuple[int, _Programme]] = []
    for start, on in cycles:
        if start + on > defrost - 120 and start < defrost + defrost_s + 300:
            continue
        prog = _Programme(a.name, a.noise_w)
        prog.add(0, on, a.power_w * k, a.pf, a.legs, inrush_x=rng.uniform(7.0, 11.0),
                 tau_s=a.inrush_tau_s, sag=a.sag)  # fmt: skip
        out.append((d0 + int(start), prog))
    heater = _Programme(a.name, a.noise_w)
    heater.add(0, defrost_s, _FRIDGE_DEFROST_W, 1.0, a.legs, sag=0.03)
    out.append((d0 + int(defrost), heater))
    return out


def _cycling(
    a: Appliance, rng: np.random.Generator, d0: int, window: tuple[float, float],
    on_s: tuple[float, float], off_s: tuple[float, float], stretch: float = 1.0,
    scale: float = 1.0,
) -> list[tuple[int, _Programme]]:  # fmt: skip
    return [
        (d0 + int(s), _simple(a, on, scale))
        for s, on in _cycle_times(rng, window, on_s, off_s, stretch)
    ]


def _heat_pump(a: Appliance, rng: np.random.Generator, duration_s: float) -> _Programme:
    """The outdoor fan starts, the compressor follows with its inrush; the fan runs on after."""
    legs, fan_w, fan_pf = _HEAT_PUMP_FAN
    lead, tail = rng.uniform(15, 40), rng.uniform(30, 60)
    prog = _Programme(a.name, a.noise_w)
    prog.add(0, lead + duration_s + tail, fan_w, fan_pf, legs)
    prog.add(lead, lead + duration_s, a.power_w * rng.uniform(0.9, 1.1), a.pf, a.legs,
             inrush_x=a.inrush_x, tau_s=a.inrush_tau_s)  # fmt: skip
    return prog


def _oven(a: Appliance, rng: np.random.Generator) -> _Programme:
    """Light and fan throughout; the element preheats, then its thermostat cycles it."""
    legs, fan_w, fan_pf = _OVEN_FAN
    preheat = rng.uniform(540, 720)
    end = preheat + rng.uniform(1500, 3000)
    prog = _Programme(a.name, a.noise_w)
    prog.add(0, end, fan_w, fan_pf, legs)
    prog.add(0, preheat, a.power_w, a.pf, a.legs, sag=a.sag)
    for s, on in _cycle_times(rng, (preheat, end - 30), (60, 150), (90, 200)):
        prog.add(s, s + on, a.power_w, a.pf, a.legs, sag=a.sag)
    return prog


def _burner(a: Appliance, rng: np.random.Generator, watts: float) -> _Programme:
    """One stove element: full for a while, then an infinite switch pulsing it."""
    full = rng.uniform(90, 300)
    end = full + rng.uniform(400, 1500)
    prog = _Programme(a.name, a.noise_w)
    prog.add(0, full, watts, a.pf, a.legs, sag=a.sag)
    for s, on in _cycle_times(rng, (full, end), (20, 90), (20, 60)):
        prog.add(s, s + on, watts, a.pf, a.legs, sag=a.sag)
    return prog


def _microwave(a: Appliance, rng: np.random.Generator, duration_s: float) -> _Programme:
    """Fan, light and turntable throughout; the magnetron full on, or pulsing at partial power."""
    legs, fan_w, fan_pf = _MICROWAVE_FAN
    prog = _Programme(a.name, a.noise_w)
    prog.add(0, duration_s, fan_w, fan_pf, legs)
    if rng.random() < 0.6:
        prog.add(0, duration_s, a.power_w, a.pf, a.legs, inrush_x=a.inrush_x)
        return prog
    period = rng.uniform(20, 30)
    duty = float(rng.choice([0.3, 0.5, 0.7]))
    t = 0.0
    while t + 3 < duration_s:
        on = min(duty * period, duration_s - t)
        prog.add(t, t + on, a.power_w, a.pf, a.legs, inrush_x=a.inrush_x)
        t += period
    return prog


def _dishwasher(a: Appliance, rng: np.random.Generator) -> _Programme:
    """Pre-rinse, a heated wash with the element cycling, rinses, a heated rinse, drying."""
    legs, pump_w, pump_pf = _DISHWASHER_PUMP
    prog = _Programme(a.name, a.noise_w)
    t = 0.0
    pumps: list[tuple[float, float]] = []
    heats: list[tuple[float, float]] = []
    pumps.append((t, t + rng.uniform(240, 360)))
    t = pumps[-1][1] + rng.uniform(60, 120)
    wash = (t, t + rng.uniform(1800, 2400))
    pumps.append(wash)
    h = wash[0] + rng.uniform(40, 90)
    heats.append((h, h + rng.uniform(600, 900)))
    for _ in range(int(rng.integers(1, 3))):
        h = heats[-1][1] + rng.uniform(200, 400)
        if h + 200 < wash[1]:
            heats.append((h, h + rng.uniform(60, 180)))
    t = wash[1]
    for _ in range(2):
        t += rng.uniform(60, 120)
        pumps.append((t, t + rng.uniform(300, 420)))
        t = pumps[-1][1]
    t += rng.uniform(60, 120)
    final = (t, t + rng.uniform(600, 800))
    pumps.append(final)
    heats.append((final[0] + 30, final[1] - rng.uniform(60, 120)))
    t = final[1]
    for _ in range(2):
        t += rng.uniform(240, 400)
        heats.append((t, t + rng.uniform(120, 240)))
        t = heats[-1][1]
    for lo, hi in pumps:
        prog.add(lo, hi, pump_w, pump_pf, legs)
    for lo, hi in heats:
        prog.add(lo, hi, a.power_w * rng.uniform(0.95, 1.05), a.pf, a.legs, sag=a.sag)
    prog.add(0, t + rng.uniform(600, 1800), a.standby_w, 0.5, a.legs, events=False)
    return prog


def _washer(a: Appliance, rng: np.random.Generator) -> _Programme:
    """Drum tumbling (wandering), a 240 V heater between drum movements, two spins, a lock."""
    heater_legs, heater_pf = _WASHER_HEATER
    prog = _Programme(a.name, a.noise_w)
    wash = rng.uniform(1500, 2700)
    spin1 = wash + rng.uniform(300, 500)
    spin1_end = spin1 + rng.uniform(90, 150)
    spin2 = spin1_end + rng.uniform(400, 700)
    end = spin2 + rng.uniform(300, 480)
    tumble = a.power_w * rng.uniform(0.8, 1.15)
    drum = _drum_wander(rng, int(end) + 2, a.wander_w)
    spin_down = tuple(np.linspace(0.9, 0.05, 15).round(3).tolist())
    prog.add(0, end, tumble, a.pf, a.legs, inrush_x=a.inrush_x, tau_s=a.inrush_tau_s,
             wander=drum, stairs=spin_down)  # fmt: skip
    for lo, hi, top, ramp in ((spin1, spin1_end, 350.0, 30), (spin2, end, 500.0, 45)):
        extra = top * rng.uniform(0.85, 1.15) - tumble
        spin = _piecewise(rng, int(hi - lo) + 2, 4.0, amp=35.0, smooth_s=3)
        prog.add(lo, hi, extra, a.pf, a.legs, ramp_s=ramp, wander=spin, stairs=spin_down)
    if rng.random() < 0.7:
        watts = rng.uniform(2000, 3500)
        h = rng.uniform(120, 300)
        spells = [(h, h + rng.uniform(480, 1200))]
        for _ in range(int(rng.integers(1, 4))):
            h = spells[-1][1] + rng.uniform(120, 400)
            if h + 150 < wash:
                spells.append((h, h + rng.uniform(40, 120)))
        for lo, hi in spells:
            prog.add(lo, hi, watts, heater_pf, heater_legs, sag=0.03)
    prog.add(end, end + rng.uniform(120, 300), a.standby_w, 0.5, a.legs, events=False)
    return prog


def _dryer(a: Appliance, rng: np.random.Generator) -> _Programme:
    """A 120 V drum motor throughout; the 240 V heater cycles under it, then a cool-down."""
    legs, motor_w, motor_pf = _DRYER_MOTOR
    end = rng.uniform(2700, 3600)
    prog = _Programme(a.name, a.noise_w)
    prog.add(0, end, motor_w, motor_pf, legs, inrush_x=3.0, tau_s=1.0)
    for s, on in _cycle_times(rng, (30, end - rng.uniform(400, 700)), (240, 480), (90, 240)):
        prog.add(s, s + on, a.power_w, a.pf, a.legs, sag=a.sag)
    return prog


def _vacuum(a: Appliance, rng: np.random.Generator) -> _Programme:
    """A few bursts of a universal motor, room by room, its draw moving with the floor."""
    prog = _Programme(a.name, a.noise_w)
    t = 0.0
    for _ in range(int(rng.integers(2, 5))):
        on = rng.uniform(120, 480)
        wander = _piecewise(rng, int(on) + 2, 5.0, amp=a.wander_w, smooth_s=3)
        prog.add(t, t + on, a.power_w * rng.uniform(0.9, 1.1), a.pf, a.legs,
                 inrush_x=a.inrush_x, tau_s=a.inrush_tau_s, wander=wander)  # fmt: skip
        t += on + rng.uniform(30, 120)
    return prog


# -- the household -------------------------------------------------------------------------


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
    >>> sorted({t.kind for t in truth}), "fridge" in {t.device for t in truth}
    (['off', 'on', 'step'], True)
    >>> power = sim.device_power(0)
    >>> round(float(power["fridge"].max())) > 5 * 95  # a compressor's inrush
    True
    """

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config if config is not None else SimulatorConfig()
        unknown = [
            d for d in (*self.config.devices, self.config.novel_device) if d and d not in _BY_NAME
        ]
        if unknown:
            raise ValueError(f"unknown devices {unknown}; known: {sorted(_BY_NAME)}")
        # Each day renders the runs of the day before too (some end after midnight): days in
        # sequence reuse them. Two days are kept; the runs are never changed once built.
        self._recent: dict[int, list[_Run]] = {}

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
        if day not in self._recent:
            if len(self._recent) >= 2:
                del self._recent[max(self._recent, key=lambda d: abs(d - day))]
            self._recent[day] = self._plan(day)
        return self._recent[day]

    def _plan(self, day: int) -> list[_Run]:
        if day < 0:
            return []
        c = self.config
        d0 = day * DAY_S
        weekend = (c.start + timedelta(days=day)).weekday() >= 5
        planned: list[tuple[int, _Programme]] = []
        for name in self._roster(day):
            # Seeded by name, so adding a device to the roster leaves the others as they were.
            key = zlib.crc32(name.encode())
            rng = np.random.default_rng([c.seed, key, day, 7919])
            k = self._degrade(name, day)
            planned += self._schedule(_BY_NAME[name], rng, d0, weekend, k)
        planned = _coincide(planned, np.random.default_rng([c.seed, day, 2_147_483_647]))
        return [prog.build(start) for start, prog in planned]

    def _schedule(
        self, a: Appliance, rng: np.random.Generator, d0: int, weekend: bool, k: float
    ) -> list[tuple[int, _Programme]]:
        h = 3600.0
        home_from = (9.0 if weekend else 17.5) * h
        u = rng.uniform
        name = a.name
        if name == "fridge":
            return _fridge(a, rng, d0, k)
        if name == "freezer":
            return _cycling(a, rng, d0, (0, DAY_S), (1200, 2400), (2400, 4200), k, k)
        if name == "heat_pump":
            times = _cycle_times(rng, (5.5 * h, 22.5 * h), (900, 2400), (2400, 6000))
            return [(d0 + int(s), _heat_pump(a, rng, on)) for s, on in times]
        if name == "well_pump":
            return _cycling(a, rng, d0, (6 * h, 22 * h), (90, 240), (2400, 7200))
        if name == "water_heater":
            starts = [u(6.2, 7.5) * h, u(19, 21.5) * h]
            return [(d0 + int(s), _simple(a, u(900, 2100))) for s in starts]
        if name == "ev_charger":
            if rng.random() < 0.25:
                return []
            return [(d0 + int(u(18.5, 22.5) * h), _simple(a, u(1.5, 4) * h))]
        if name == "oven":
            if rng.random() < 0.4:
                return []
            return [(d0 + int(u(17.3, 18.3) * h), _oven(a, rng))]
        if name == "stove":
            runs: list[tuple[int, _Programme]] = []
            meals = [u(7, 8.5) * h] if rng.random() < 0.3 else []
            meals += [u(17.5, 19) * h] if rng.random() < 0.7 else []
            for meal in meals:
                runs.append(
                    (d0 + int(meal), _burner(a, rng, float(rng.choice([1200, 1800, 2400]))))
                )
                if rng.random() < 0.4:
                    second = meal + u(60, 600)
                    runs.append(
                        (d0 + int(second), _burner(a, rng, float(rng.choice([1200, 2000]))))
                    )
            return runs
        if name == "microwave":
            starts = [u(7, 8.5), u(12, 13), u(18, 20.5)][: int(rng.integers(1, 4))]
            return [(d0 + int(s * h), _microwave(a, rng, u(60, 300))) for s in starts]
        if name == "dishwasher":
            if rng.random() < 0.3:
                return []
            return [(d0 + int(u(20, 21.5) * h), _dishwasher(a, rng))]
        if name == "washer":
            if rng.random() < 0.5 and not weekend:
                return []
            start = u(9, 10) * h if weekend else u(17.8, 18.5) * h
            return [(d0 + int(start), _washer(a, rng))]
        if name == "dryer":
            if rng.random() < 0.5 and not weekend:
                return []
            start = (u(11.5, 12.5) if weekend else u(20, 20.8)) * h
            return [(d0 + int(start), _dryer(a, rng))]
        if name == "vacuum":
            if rng.random() < 0.6:
                return []
            return [(d0 + int((u(10, 12) if weekend else u(16.5, 17.5)) * h), _vacuum(a, rng))]
        if name == "lights":
            evening = (d0 + int(u(home_from / h, 19.5) * h), _simple(a, u(3, 5) * h))
            morning = (d0 + int(u(6, 6.5) * h), _simple(a, u(1200, 3000)))
            return [morning, evening]
        if name == "tv":
            return [(d0 + int(u(19, 20.5) * h), _wandering(a, rng, u(1.5, 3) * h))]
        if name == "computer":
            span = (
                (u(9, 10), u(15, 17)) if weekend or rng.random() < 0.4 else (u(20, 21), u(22, 23))
            )
            return [(d0 + int(span[0] * h), _wandering(a, rng, (span[1] - span[0]) * h))]
        raise ValueError(f"no schedule for {name!r}")

    # -- rendering ---------------------------------------------------------------------------

    def day(self, index: int) -> tuple[ReadingBatch, list[TruthEvent]]:
        """Readings and truth events of day `index` (0 is the day of `config.start`)."""
        p, q, truth, _ = self._render(index, per_device=False)
        return self._meter(index, p, q), truth

    def device_power(self, index: int) -> dict[str, FloatArray]:
        """Each device's own active power (W, both legs summed) over the seconds of day `index`.

        The sub-metered truth: what a plug meter on each device would read, second by second,
        with the same flicker the readings carry. The readings' total is their sum plus the
        always-on base load and meter noise. Devices that did not run that day are absent.
        """
        return self._render(index, per_device=True)[3]

    def device_energy_wh(self, days: float) -> dict[str, float]:
        """Energy each device used over the first `days` (a fraction cuts the last day), in Wh.

        Every device that ran on one of the days rendered is listed, with 0.0 when its runs
        fell after the cut.

        Examples
        --------
        >>> energy = HouseholdSimulator(SimulatorConfig(seed=3)).device_energy_wh(0.5)
        >>> 300 < energy["fridge"] < 700, energy["heat_pump"] > energy["fridge"] > energy["tv"]
        (True, True)
        """
        end_s = int(days * DAY_S)
        total: dict[str, float] = {}
        for index in range(math.ceil(days)):
            upto = min(end_s - index * DAY_S, DAY_S)
            for device, power in self.device_power(index).items():
                total[device] = total.get(device, 0.0) + float(power[:upto].sum()) / 3600.0
        return {d: round(e, 3) for d, e in sorted(total.items())}

    def _render(
        self, index: int, per_device: bool
    ) -> tuple[
        dict[str, FloatArray], dict[str, FloatArray], list[TruthEvent], dict[str, FloatArray]
    ]:
        c = self.config
        d0 = index * DAY_S
        p = {"a": np.zeros(DAY_S), "b": np.zeros(DAY_S)}
        q = {"a": np.zeros(DAY_S), "b": np.zeros(DAY_S)}
        devices: dict[str, FloatArray] = {}
        truth: list[TruthEvent] = []
        start_us = to_epoch_us(c.start)
        for run in self._runs(index - 1) + self._runs(index):
            lo, hi = run.start_s - d0, run.start_s - d0 + run.length_s
            if hi <= 0 or lo >= DAY_S:
                continue
            cut_lo, cut_hi = max(-lo, 0), run.length_s - max(hi - DAY_S, 0)
            span = slice(max(lo, 0), min(hi, DAY_S))
            rng = np.random.default_rng([c.seed, run.start_s, 104729])
            for leg, leg_p in run.p.items():
                seg = leg_p[cut_lo:cut_hi]
                noise = rng.normal(0.0, run.noise_w / len(run.p), len(seg)) * (seg > _IDLE_W)
                seg = np.maximum(seg + noise, 0.0)
                p[leg][span] += seg
                q[leg][span] += run.q[leg][cut_lo:cut_hi]
                if per_device:
                    devices.setdefault(run.device, np.zeros(DAY_S))[span] += seg
            for offset, legs, ramp_s, delta, kind in run.steps:
                t = run.start_s + offset
                if d0 <= t < d0 + DAY_S:
                    ts = from_epoch_us(start_us + t * 1_000_000)
                    truth.append(TruthEvent(ts, run.device, legs, kind, delta, float(ramp_s)))
        truth = _merge_same_second(truth)
        truth.sort(key=lambda e: (e.ts, e.device, e.legs))
        return p, q, truth, dict(sorted(devices.items()))

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


def _coincide(
    planned: list[tuple[int, _Programme]], rng: np.random.Generator
) -> list[tuple[int, _Programme]]:
    """Move a few runs of devices people switch by hand to start in the very second another
    device switches on another leg (the TV with the fridge's compressor): the meter sees both
    legs step at once, and each is still its own event. A second that already has a run moved
    to it on a leg takes no other on that leg: two devices starting in the same second on one
    leg are one step to any 1 Hz meter, not the case this stands for."""
    out = list(planned)
    moved_legs: dict[int, set[str]] = {}
    for i, (start, prog) in enumerate(planned):
        if prog.device not in _MOVABLE or rng.random() >= 0.35:
            continue
        legs = {leg for part in prog.parts for leg in part[1]}
        candidates = [
            s
            for s, other in planned
            if other.device != prog.device
            and 0 < abs(s - start) <= 1800
            and not legs & {leg for part in other.parts for leg in part[1]}
            and not legs & moved_legs.get(s, set())
        ]
        if candidates:
            anchor = min(candidates, key=lambda s: abs(s - start))
            out[i] = (anchor, prog)
            moved_legs.setdefault(anchor, set()).update(legs)
    return out


def _merge_same_second(truth: list[TruthEvent]) -> list[TruthEvent]:
    """One device's steps in the same second, from two of its runs (one stove element's pulse
    ending as another's begins), as the one change of that device's draw they make, as a
    run's own parts switching together already are: none when they cancel out."""
    by_key: dict[tuple[datetime, str], list[TruthEvent]] = {}
    for e in truth:
        by_key.setdefault((e.ts, e.device), []).append(e)
    out: list[TruthEvent] = []
    for (ts, device), same in by_key.items():
        if len(same) == 1:
            out.append(same[0])
            continue
        delta = round(sum(e.delta_p_w for e in same), 1)
        if abs(delta) < _MIN_STEP_W:
            continue
        legs = "".join(leg for leg in "ab" if any(leg in e.legs for e in same))
        kinds = {e.kind for e in same}
        kind = kinds.pop() if len(kinds) == 1 else "step"
        out.append(TruthEvent(ts, device, legs, kind, delta, max(e.ramp_s for e in same)))
    return out


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
