"""Records that flow through the system: readings, rejections, events and ground truth.

A `Reading` is one 1 Hz sample of both legs. Streams move readings in `ReadingBatch`es, numpy
columns for one home, because per-item overhead in the stream engine, not arithmetic, is what
limits replay speed.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

__all__ = [
    "LEGS",
    "LEG_FIELDS",
    "READING_COLUMNS",
    "Event",
    "Label",
    "Reading",
    "ReadingBatch",
    "ReadingChunk",
    "Rejection",
    "TruthEvent",
    "event_id_for",
    "from_epoch_us",
    "to_epoch_us",
]

LEGS = ("a", "b")
# Per-leg quantities in the Shelly's own names; the record fields add units.
LEG_FIELDS = ("voltage", "current", "act_power", "aprt_power", "pf", "freq")
READING_COLUMNS = tuple(f"{leg}_{name}" for leg in LEGS for name in LEG_FIELDS)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def to_epoch_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch of a timezone-aware datetime.

    >>> to_epoch_us(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))
    1000000
    """
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: timestamps must be timezone-aware UTC")
    delta = ts - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(us: int) -> datetime:
    """The UTC datetime of microseconds since the Unix epoch.

    >>> from_epoch_us(1_000_000).isoformat()
    '1970-01-01T00:00:01+00:00'
    """
    return datetime.fromtimestamp(us // 1_000_000, tz=UTC).replace(microsecond=int(us % 1_000_000))


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample of both legs of a split-phase panel, as the Shelly Pro 3EM reports it.

    Quantities a source does not measure (REDD has active power only) are NaN.
    """

    ts: datetime
    a_voltage_v: float
    a_current_a: float
    a_act_power_w: float
    a_aprt_power_w: float
    a_pf: float
    a_freq_hz: float
    b_voltage_v: float
    b_current_a: float
    b_act_power_w: float
    b_aprt_power_w: float
    b_pf: float
    b_freq_hz: float

    @property
    def total_act_power_w(self) -> float:
        return self.a_act_power_w + self.b_act_power_w

    @property
    def total_aprt_power_w(self) -> float:
        return self.a_aprt_power_w + self.b_aprt_power_w

    @property
    def a_react_power_var(self) -> float:
        """Magnitude of reactive power, from S² = P² + Q² (the Shelly does not report its sign)."""
        return reactive_power(self.a_act_power_w, self.a_aprt_power_w)

    @property
    def b_react_power_var(self) -> float:
        return reactive_power(self.b_act_power_w, self.b_aprt_power_w)

    @property
    def leg_imbalance_w(self) -> float:
        """Leg a minus leg b active power: what flows on the neutral, in watts."""
        return self.a_act_power_w - self.b_act_power_w

    def values(self) -> tuple[float, ...]:
        """The per-leg quantities in `READING_COLUMNS` order."""
        return (
            self.a_voltage_v, self.a_current_a, self.a_act_power_w, self.a_aprt_power_w,
            self.a_pf, self.a_freq_hz,
            self.b_voltage_v, self.b_current_a, self.b_act_power_w, self.b_aprt_power_w,
            self.b_pf, self.b_freq_hz,
        )  # fmt: skip


def reactive_power(act_power_w: float, aprt_power_w: float) -> float:
    """|Q| in var from P and S; 0 where noise makes |P| exceed S.

    >>> reactive_power(80.0, 100.0)
    60.0
    """
    return math.sqrt(max(aprt_power_w * aprt_power_w - act_power_w * act_power_w, 0.0))


@dataclass(frozen=True, slots=True)
class ReadingBatch:
    """Consecutive readings of one home as columns; `seq` numbers them at the source.

    `ts_us` is microseconds since the epoch, UTC. `columns` maps every name of
    `READING_COLUMNS` to a float64 array.
    """

    home_id: str
    seq: IntArray
    ts_us: IntArray
    columns: dict[str, FloatArray]
    # Columns the source measures; REDD measures active power only, and the rest stays NaN.
    measured: tuple[str, ...] = READING_COLUMNS

    def __len__(self) -> int:
        return len(self.ts_us)

    def __getitem__(self, index: slice | npt.NDArray[np.bool_] | IntArray) -> ReadingBatch:
        return ReadingBatch(
            self.home_id,
            self.seq[index],
            self.ts_us[index],
            {name: col[index] for name, col in self.columns.items()},
            self.measured,
        )

    def act_power(self) -> FloatArray:
        """Active power as a (legs, samples) array, the detectors' input."""
        return np.vstack([self.columns["a_act_power"], self.columns["b_act_power"]])

    @classmethod
    def empty(cls, home_id: str) -> ReadingBatch:
        return cls(
            home_id,
            np.empty(0, np.int64),
            np.empty(0, np.int64),
            {name: np.empty(0, np.float64) for name in READING_COLUMNS},
        )

    @classmethod
    def from_readings(
        cls, home_id: str, readings: Sequence[Reading], seq: Sequence[int] | None = None
    ) -> ReadingBatch:
        values = np.array([r.values() for r in readings], dtype=np.float64).reshape(
            len(readings), len(READING_COLUMNS)
        )
        return cls(
            home_id,
            np.asarray(seq if seq is not None else range(len(readings)), dtype=np.int64),
            np.array([to_epoch_us(r.ts) for r in readings], dtype=np.int64),
            {name: values[:, i].copy() for i, name in enumerate(READING_COLUMNS)},
        )

    @classmethod
    def concat(cls, batches: Sequence[ReadingBatch]) -> ReadingBatch:
        if not batches:
            raise ValueError("concat needs at least one batch")
        return cls(
            batches[0].home_id,
            np.concatenate([b.seq for b in batches]),
            np.concatenate([b.ts_us for b in batches]),
            {n: np.concatenate([b.columns[n] for b in batches]) for n in READING_COLUMNS},
            batches[0].measured,
        )

    def readings(self) -> Iterator[Reading]:
        cols = [self.columns[name] for name in READING_COLUMNS]
        for i, us in enumerate(self.ts_us.tolist()):
            yield Reading(from_epoch_us(us), *(float(c[i]) for c in cols))


@dataclass(frozen=True, slots=True)
class Rejection:
    """A row that was not accepted: what it was, why, and where it came from.

    `source_key` names the row at its source (file and row, or agent sequence number) so that a
    replay writes the same rejection once.
    """

    home_id: str
    source_key: str
    raw: str
    reason: str

    @property
    def rejection_id(self) -> str:
        return hashlib.blake2b(
            f"{self.home_id}|{self.source_key}".encode(), digest_size=12
        ).hexdigest()


def event_id_for(home_id: str, ts_us: int, legs: str) -> str:
    """A deterministic event id, so that a replay writes the same event again, not a new one.

    >>> event_id_for("home", 0, "a") == event_id_for("home", 0, "a")
    True
    """
    return hashlib.blake2b(f"{home_id}|{ts_us}|{legs}".encode(), digest_size=10).hexdigest()


@dataclass(frozen=True, slots=True)
class Event:
    """One physical switch: a step of steady power on one leg or on both together.

    `ts` is the second the step begins. Deltas are after minus before, summed over `legs`.
    `inrush_peak_w` is the largest excess over the new level during settling (0 if none).
    A `provisional` event is the detector's current view of a step that later samples may still
    refine or retract (`nilm.provisional`); a final one never changes.
    """

    event_id: str
    home_id: str
    ts: datetime
    legs: str
    delta_p_w: float
    delta_q_var: float
    delta_s_va: float
    delta_current_a: float
    delta_pf: float
    p_before_w: float
    p_after_w: float
    delta_p_a_w: float
    delta_p_b_w: float
    voltage_v: float
    inrush_peak_w: float = 0.0
    ramp_s: float = 0.0
    settle_slope_w_per_s: float = 0.0
    detector: str = ""
    extra: dict[str, float] = field(default_factory=dict, compare=False)
    provisional: bool = False

    @property
    def is_on(self) -> bool:
        return self.delta_p_w > 0


@dataclass(frozen=True, slots=True)
class TruthEvent:
    """A ground-truth switch from the simulator: `kind` is 'on', 'off' or 'step'.

    `ts` is the second the change begins; `ramp_s` how long it takes to complete (a soft start,
    a staircase shut-down), so a detector that stamps the start is right anywhere in
    [ts, ts + ramp_s]. `delta_p_w` is the settled change (after any inrush has decayed).
    """

    ts: datetime
    device: str
    legs: str
    kind: str
    delta_p_w: float
    ramp_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Label:
    """A user's confirmation or correction: event `event_id` was device `device`.

    `label_id` increases with every confirmation; the flow's label input snapshots the last one
    it has passed on, so no label is learned twice or lost across restarts.
    """

    label_id: int
    home_id: str
    event_id: str
    device: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ReadingChunk:
    """What a source hands the flow: parsed readings of one home and the rows it could not parse.

    `source` names where they came from (a file, `agent`, `simulator`) and prefixes the
    rejections' source keys.
    """

    source: str
    batch: ReadingBatch
    rejections: tuple[Rejection, ...] = ()
