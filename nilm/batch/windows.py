"""Event windows: each leg's power trajectory around an event, for the networks.

A window holds, at 1 Hz from `before_s` seconds before the event to `after_s` seconds after it,
the active and reactive power of each leg (channels `WINDOW_CHANNELS`). Each channel has its
level before the event removed (the median of the samples before it), so other loads already
running do not show, and is then squashed by `asinh(x / scale_w)`: linear for small steps,
logarithmic for large ones, so a 60 W lamp and a 7 kW charger both stay in a narrow range while
their sizes still differ. Readings are resampled by sample-and-hold, which bridges logger gaps.

`EventWindower` does the same on a stream: it keeps just enough readings to cut each event's
window once `after_s` seconds have passed, so windows can be stored with their events and batch
models can be trained without re-reading readings.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from nilm.records import Event, ReadingBatch, to_epoch_us

__all__ = [
    "WINDOW_CHANNELS",
    "EventWindow",
    "EventWindower",
    "PairedWindower",
    "extract_windows",
    "window_features",
    "window_from_features",
    "window_row",
]

log = logging.getLogger(__name__)

WINDOW_CHANNELS = ("a_act_power", "b_act_power", "a_react_power", "b_react_power")
Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True, eq=False)
class EventWindow:
    """The normalised trajectory around one event: `values` has shape (channels, samples).

    Sample `before_s` is the event's own second (the last one before the step).
    """

    event_id: str
    home_id: str
    ts: datetime
    before_s: int
    values: Float32Array

    @property
    def after_s(self) -> int:
        return int(self.values.shape[1]) - self.before_s


def _channels(batch: ReadingBatch) -> npt.NDArray[np.float64]:
    """(channels, samples): P and |Q| per leg; |Q| is 0 where apparent power is not measured."""
    out = np.empty((len(WINDOW_CHANNELS), len(batch)), dtype=np.float64)
    for i, leg in enumerate("ab"):
        p = batch.columns[f"{leg}_act_power"]
        s = batch.columns[f"{leg}_aprt_power"]
        out[i] = p
        q = np.sqrt(np.maximum(s * s - p * p, 0.0))
        out[2 + i] = np.where(np.isfinite(q), q, 0.0)
    return out


def extract_windows(
    batch: ReadingBatch,
    events: Sequence[Event],
    before_s: int = 30,
    after_s: int = 90,
    scale_w: float = 100.0,
) -> list[EventWindow]:
    """The window of each event, cut from `batch` (sample-and-hold outside or between readings).

    Parameters
    ----------
    batch
        Readings that cover the events' windows; edges outside it repeat the nearest reading.
    events
        The events to cut windows for.
    before_s, after_s
        Seconds kept before and after each event's second.
    scale_w
        Watts (or var) at which `asinh` turns from linear to logarithmic.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from nilm.records import READING_COLUMNS, Event
    >>> n = 200
    >>> cols = {c: np.zeros(n) for c in READING_COLUMNS}
    >>> cols["a_act_power"] = np.where(np.arange(n) <= 100, 50.0, 550.0)
    >>> cols["a_aprt_power"] = cols["a_act_power"]
    >>> b = ReadingBatch("h", np.arange(n), np.arange(n) * 1_000_000, cols)
    >>> e = Event("e", "h", datetime.fromtimestamp(100, UTC), "a", 500.0, 0.0, 500.0, 4.0, 0.0,
    ...           50.0, 550.0, 500.0, 0.0, 120.0)
    >>> w = extract_windows(b, [e], before_s=3, after_s=4)[0]
    >>> w.values.shape, [round(float(v), 2) for v in w.values[0]]
    ((4, 7), [0.0, 0.0, 0.0, 0.0, 2.31, 2.31, 2.31])
    """
    if not events:
        return []
    if len(batch) == 0:
        raise ValueError("extract_windows needs readings that cover the events; got none")
    data = _channels(batch)
    offsets_us = np.arange(-before_s, after_s, dtype=np.int64) * 1_000_000
    windows: list[EventWindow] = []
    for event in events:
        grid = to_epoch_us(event.ts) + offsets_us
        idx = np.clip(np.searchsorted(batch.ts_us, grid, side="right") - 1, 0, len(batch) - 1)
        raw = data[:, idx]
        lead = raw[:, : max(before_s, 1)]
        # np.nanmedian of a small array goes through masked arrays (~0.5 ms an event); without
        # NaN, np.median gives the same numbers
        nan = np.isnan(lead).any()
        base = (np.nanmedian if nan else np.median)(lead, axis=1, keepdims=True)
        rel = np.nan_to_num(raw - np.nan_to_num(base), nan=0.0)
        values = np.arcsinh(rel / scale_w).astype(np.float32)
        windows.append(EventWindow(event.event_id, event.home_id, event.ts, before_s, values))
    return windows


class EventWindower:
    """Cuts each event's window from a stream of readings once its `after_s` seconds are in.

    Parameters
    ----------
    home_id
        The home whose readings and events come in.
    before_s, after_s, scale_w
        As in `extract_windows`.
    latency_s
        How late an event may arrive after its own second (the detector's settling delay).

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from nilm.records import READING_COLUMNS, Event
    >>> def batch(lo, hi):
    ...     cols = {c: np.full(hi - lo, 10.0) for c in READING_COLUMNS}
    ...     return ReadingBatch("h", np.arange(lo, hi), np.arange(lo, hi) * 1_000_000, cols)
    >>> e = Event("e", "h", datetime.fromtimestamp(50, UTC), "a", 500.0, 0.0, 500.0, 4.0, 0.0,
    ...           10.0, 510.0, 500.0, 0.0, 120.0)
    >>> w = EventWindower("h", before_s=30, after_s=90)
    >>> w.update(batch(0, 60), [e])
    []
    >>> [x.event_id for x in w.update(batch(60, 140))]
    ['e']
    """

    def __init__(
        self,
        home_id: str,
        before_s: int = 30,
        after_s: int = 90,
        scale_w: float = 100.0,
        latency_s: int = 60,
    ) -> None:
        self.home_id = home_id
        self.before_s = before_s
        self.after_s = after_s
        self.scale_w = scale_w
        self.latency_s = latency_s
        self.tail = ReadingBatch.empty(home_id)
        self.pending: list[Event] = []

    def update(self, batch: ReadingBatch, events: Sequence[Event] = ()) -> list[EventWindow]:
        """Windows of the events (given now or before) whose `after_s` seconds have arrived."""
        self.pending.extend(events)
        if len(batch):
            self.tail = ReadingBatch.concat([self.tail, batch]) if len(self.tail) else batch
        if len(self.tail) == 0:
            return []
        last_us = int(self.tail.ts_us[-1])
        horizon_us = (self.after_s - 1) * 1_000_000
        ready = [e for e in self.pending if to_epoch_us(e.ts) + horizon_us <= last_us]
        self.pending = [e for e in self.pending if to_epoch_us(e.ts) + horizon_us > last_us]
        windows = extract_windows(self.tail, ready, self.before_s, self.after_s, self.scale_w)
        keep_from = last_us - (self.before_s + self.latency_s) * 1_000_000
        if self.pending:
            first = min(to_epoch_us(e.ts) for e in self.pending)
            keep_from = min(keep_from, first - (self.before_s + 1) * 1_000_000)
        cut = int(np.searchsorted(self.tail.ts_us, keep_from, side="left"))
        if cut > 0:
            self.tail = self.tail[cut:]
        return windows

    def flush(self) -> list[EventWindow]:
        """Windows of the events still pending, their missing end held at the last reading."""
        ready, self.pending = self.pending, []
        if not ready or len(self.tail) == 0:
            return []
        return extract_windows(self.tail, ready, self.before_s, self.after_s, self.scale_w)


class PairedWindower:
    """An `EventWindower` fed by two streams: reading batches, and the detector's answer to each.

    In the dataflow the readings reach the windows step straight from validation while their
    events come through the detector, so a batch and the events found in it may arrive in either
    order. The detector answers every batch with one list (empty when it found nothing), so the
    k-th answer goes with the k-th batch: each is held only until its partner comes, then both
    go to the `EventWindower` in stream order. Windows therefore do not depend on which stream
    came first nor on how the readings were cut into batches (the windower itself keeps about
    `before_s + latency_s` seconds of readings, plus those of events still waiting for their
    `after_s` seconds).

    Parameters
    ----------
    home_id, before_s, after_s, scale_w, latency_s
        As in `EventWindower`.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from nilm.records import READING_COLUMNS, Event
    >>> def batch(lo, hi):
    ...     cols = {c: np.full(hi - lo, 10.0) for c in READING_COLUMNS}
    ...     return ReadingBatch("h", np.arange(lo, hi), np.arange(lo, hi) * 1_000_000, cols)
    >>> e = Event("e", "h", datetime.fromtimestamp(50, UTC), "a", 500.0, 0.0, 500.0, 4.0, 0.0,
    ...           10.0, 510.0, 500.0, 0.0, 120.0)
    >>> w = PairedWindower("h")
    >>> w.on_events([]), w.on_events([e]), w.on_readings(batch(0, 60))
    ([], [], [])
    >>> [x.event_id for x in w.on_readings(batch(60, 140))]
    ['e']
    """

    def __init__(
        self,
        home_id: str,
        before_s: int = 30,
        after_s: int = 90,
        scale_w: float = 100.0,
        latency_s: int = 60,
    ) -> None:
        self.home_id = home_id
        self.windower = EventWindower(home_id, before_s, after_s, scale_w, latency_s)
        self.batches: deque[ReadingBatch] = deque()
        self.answers: deque[list[Event]] = deque()

    def on_readings(self, batch: ReadingBatch) -> list[EventWindow]:
        """A batch of accepted readings; windows that became complete."""
        if not self.answers:
            self.batches.append(batch)
            return []
        return self.windower.update(batch, self.answers.popleft())

    def on_events(self, events: Sequence[Event]) -> list[EventWindow]:
        """The detector's answer to the next batch; windows that became complete."""
        if not self.batches:
            self.answers.append(list(events))
            return []
        return self.windower.update(self.batches.popleft(), events)

    def flush(self) -> list[EventWindow]:
        """At the end of the stream: every event's window, its missing end held."""
        windows: list[EventWindow] = []
        while self.batches:
            windows += self.windower.update(self.batches.popleft())
        while self.answers:
            windows += self.windower.update(
                ReadingBatch.empty(self.home_id), self.answers.popleft()
            )
        return windows + self.windower.flush()


def window_features(window: EventWindow) -> dict[str, float]:
    """The window as flat features `w{channel}_{sample}`, to travel in a River-style dict.

    >>> from datetime import UTC, datetime
    >>> w = EventWindow("e", "h", datetime(2026, 1, 1, tzinfo=UTC), 1,
    ...                 np.ones((4, 3), np.float32))
    >>> sorted(window_features(w))[:3], window_features(w)["window_before_s"]
    (['w0_0', 'w0_1', 'w0_2'], 1.0)
    """
    features = {
        f"w{c}_{t}": float(v)
        for c, row in enumerate(window.values)
        for t, v in enumerate(row.tolist())
    }
    features["window_before_s"] = float(window.before_s)
    return features


def window_from_features(
    x: Mapping[str, float], channels: int, samples: int
) -> Float32Array | None:
    """The (channels, samples) window inside a feature dict, or None when it has none.

    >>> window_from_features({"w0_0": 2.0}, 1, 1).tolist()
    [[2.0]]
    >>> window_from_features({"delta_p_w": 2.0}, 1, 1) is None
    True
    """
    if "w0_0" not in x:
        return None
    out = np.zeros((channels, samples), dtype=np.float32)
    for c in range(channels):
        for t in range(samples):
            out[c, t] = x.get(f"w{c}_{t}", 0.0)
    return out


def window_row(window: EventWindow) -> tuple[str, dict[str, Any]]:
    """The `event_windows` row of a window (values as a flat list of float, channel-major)."""
    return (
        "event_windows",
        {
            "event_id": window.event_id,
            "home_id": window.home_id,
            "ts": window.ts,
            "before_s": window.before_s,
            "channels": int(window.values.shape[0]),
            "samples": int(window.values.shape[1]),
            "window": window.values.ravel().astype(float).tolist(),
        },
    )
