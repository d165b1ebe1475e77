"""Device health: per-device drift detectors that say what changed and since when.

For each device the monitor watches its on-step power, inrush peak, run duration and duty cycle
with a River drift detector (`ADWIN` by default, or `PageHinkley` with its threshold scaled to
the metric's own level, so that watts and seconds need no hand-tuned constants), and the
energy of each run, which grows fastest when a device both draws more and runs longer. A detection
becomes an `Alert` only when the change is large enough to matter (`min_change`, relative) and
the device has a baseline (`min_samples`); the alert gives the level before and after and the
time of the first sample of the changed stretch.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from river import drift

from nilm.pairing import Activation
from nilm.records import Event

__all__ = ["METRICS", "Alert", "HealthMonitor", "MetricWatch"]

logger = logging.getLogger(__name__)

# Metric name -> (unit, what it is, relative change that raises an alert).
METRICS: dict[str, tuple[str, str, float]] = {
    "delta_p_w": ("W", "power when switched on", 0.015),
    "inrush_peak_w": ("W", "inrush peak", 0.15),
    "run_duration_s": ("s", "run time", 0.08),
    "run_energy_wh": ("Wh", "energy per run", 0.06),
    "duty_cycle": ("", "duty cycle", 0.10),
}


@dataclass(frozen=True, slots=True)
class Alert:
    """A device's metric moved from `before_value` to `after_value` starting at `since_ts`."""

    home_id: str
    device: str
    metric: str
    ts: datetime
    since_ts: datetime
    before_value: float
    after_value: float
    message: str

    @property
    def alert_id(self) -> str:
        key = f"{self.home_id}|{self.device}|{self.metric}|{self.ts.isoformat()}"
        return hashlib.blake2b(key.encode(), digest_size=10).hexdigest()

    def row(self) -> dict[str, Any]:
        """The `alerts` table row."""
        return {
            "alert_id": self.alert_id,
            "home_id": self.home_id,
            "device": self.device,
            "ts": self.ts,
            "metric": self.metric,
            "since_ts": self.since_ts,
            "before_value": self.before_value,
            "after_value": self.after_value,
            "message": self.message,
        }


def _fmt(value: float, unit: str) -> str:
    if unit == "":
        return f"{100 * value:.0f} %"
    if unit == "s" and value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.0f} {unit}"


class MetricWatch:
    """One metric of one device: a drift detector plus the recent values and their times.

    Parameters
    ----------
    metric
        A name in `METRICS`.
    detector
        `adwin` or `page_hinkley`.
    min_samples
        Samples needed before any alert (the baseline).
    history
        How many recent samples are kept to date and size a change.
    delta
        ADWIN's confidence (smaller is stricter).
    ph_allowance, ph_threshold
        PageHinkley's drift allowance and threshold, in standard deviations of the baseline
        samples (so in watts for power, seconds for run time).
    min_changed
        Samples the changed stretch needs before it counts (a handful of odd runs is not a
        change).

    Examples
    --------
    >>> from datetime import UTC, datetime, timedelta
    >>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
    >>> w = MetricWatch("delta_p_w")
    >>> alerts = [w.update(t0 + timedelta(hours=i), 125.0 + (i % 3) + (20.0 if i >= 60 else 0.0))
    ...           for i in range(100)]
    >>> first = next(i for i, a in enumerate(alerts) if a)
    >>> 60 <= first < 80, round(alerts[first][0]), round(alerts[first][1])
    (True, 126, 146)
    """

    def __init__(
        self,
        metric: str,
        detector: str = "adwin",
        min_samples: int = 30,
        history: int = 1000,
        delta: float = 0.01,
        ph_allowance: float = 0.5,
        ph_threshold: float = 8.0,
        min_changed: int = 5,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
        if detector not in ("adwin", "page_hinkley"):
            raise ValueError(f"unknown detector {detector!r}; choose 'adwin' or 'page_hinkley'")
        self.metric = metric
        self.detector = detector
        self.min_samples = min_samples
        self.history = history
        self.delta = delta
        self.ph_allowance = ph_allowance
        self.ph_threshold = ph_threshold
        self.min_changed = min_changed
        self._pending = False
        self.values: deque[tuple[datetime, float]] = deque(maxlen=history)
        self.baseline: float | None = None
        self.n = 0
        self._detector: Any = None
        if detector == "adwin":
            # Events are sparse (tens a day): check for a cut every few samples, not every 32.
            self._detector = drift.ADWIN(delta=delta, clock=1)  # type: ignore[no-untyped-call]

    def clone(self) -> MetricWatch:
        return MetricWatch(
            self.metric, self.detector, self.min_samples, self.history, self.delta,
            self.ph_allowance, self.ph_threshold, self.min_changed,
        )  # fmt: skip

    def _page_hinkley(self) -> Any:
        # Page's CUSUM in the metric's own units (watts, seconds): allowance and threshold are
        # multiples of the spread of the baseline samples, as for a standardised CUSUM.
        values = [v for _, v in self.values]
        mean = sum(values) / len(values)
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))
        spread = max(spread, 0.005 * abs(mean), 1e-9)
        return drift.PageHinkley(
            min_instances=self.min_samples,
            delta=self.ph_allowance * spread,
            threshold=self.ph_threshold * spread,
            alpha=1.0,
        )

    def update(self, ts: datetime, value: float) -> tuple[float, float, datetime] | None:
        """Add a sample; (before, after, since) when it completes a large enough change."""
        if not math.isfinite(value):
            return None
        self.values.append((ts, value))
        self.n += 1
        if self.n == self.min_samples:
            self.baseline = sum(v for _, v in self.values) / len(self.values)
        if self._detector is None and self.baseline is not None:
            self._detector = self._page_hinkley()
        if self._detector is None:
            return None
        self._detector.update(value)
        if self._detector.drift_detected:
            self._pending = True
        if not self._pending or self.baseline is None:
            return None
        values = list(self.values)
        split = _change_point([v for _, v in values])
        if split is None:
            return None
        older, recent = values[:split], values[split:]
        if len(recent) < self.min_changed:
            return None  # a detection waits until the changed stretch is long enough to size
        self._pending = False
        # Trimmed means: a few mispaired runs (a missed off doubles a run) must not make a change.
        before = _trimmed_mean([v for _, v in older])
        after = _trimmed_mean([v for _, v in recent])
        if abs(after - before) < METRICS[self.metric][2] * max(abs(before), 1e-9):
            return None
        # The changed stretch is the new normal: start the history again from it.
        self.values = deque(recent, maxlen=self.history)
        self.baseline = after
        if self.detector == "page_hinkley":
            self._detector = self._page_hinkley()
        return before, after, recent[0][0]


def _trimmed_mean(values: list[float], cut: float = 0.1) -> float:
    """The mean without the lowest and highest `cut` of the values (at least one each from 5 on).

    >>> _trimmed_mean([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 100.0])
    5.5
    >>> round(_trimmed_mean([14.2, 13.6, 47.9, 14.9, 13.8]), 2)
    14.3
    """
    ordered = sorted(values)
    k = max(int(len(ordered) * cut), 1 if len(ordered) >= 5 else 0)
    kept = ordered[k : len(ordered) - k] or ordered
    return sum(kept) / len(kept)


def _change_point(values: list[float], min_side: int = 3) -> int | None:
    """Where a single shift of the mean most likely happened (the maximum of the two-sample
    statistic |mean(after) - mean(before)| * sqrt(k (n - k) / n)); None if too few values.

    >>> _change_point([1.0, 1.1, 0.9, 1.0, 2.0, 2.1, 1.9, 2.0])
    4
    """
    n = len(values)
    if n < 2 * min_side:
        return None
    total = sum(values)
    best, best_k, left = -1.0, None, 0.0
    for k in range(1, n):
        left += values[k - 1]
        if k < min_side or n - k < min_side:
            continue
        stat = abs((total - left) / (n - k) - left / k) * math.sqrt(k * (n - k) / n)
        if stat > best:
            best, best_k = stat, k
    return best_k


class HealthMonitor:
    """Watches every known device of a home and raises `Alert`s.

    Parameters
    ----------
    home_id
        The home.
    detector
        `adwin` or `page_hinkley`, for every metric.
    min_samples
        Samples of a metric before it can alert.
    max_cycle_gap_s
        A run that starts more than this after the previous one ended does not count towards the
        duty cycle (the device was idle, not cycling).
    delta
        ADWIN's confidence for every metric.

    Examples
    --------
    >>> from datetime import UTC, datetime, timedelta
    >>> from nilm.pairing import Activation
    >>> t0 = datetime(2026, 1, 5, tzinfo=UTC)
    >>> hm = HealthMonitor("h")
    >>> alerts = []
    >>> for i in range(120):
    ...     start = t0 + timedelta(minutes=40 * i)
    ...     run_s = 900 + 10 * (i % 3) + (250 if i >= 80 else 0)
    ...     run = Activation(f"r{i}", "h", "fridge", "a", f"r{i}", start, 125.0, f"o{i}",
    ...                      start + timedelta(seconds=run_s), 125.0, 30.0)
    ...     alerts += hm.on_activation(run)
    >>> [(a.metric, a.since_ts >= t0 + timedelta(minutes=40 * 80)) for a in alerts][:1]
    [('run_duration_s', True)]
    >>> alerts[0].message.startswith("fridge: run time rose")
    True
    """

    def __init__(
        self,
        home_id: str,
        detector: str = "adwin",
        min_samples: int = 30,
        max_cycle_gap_s: float = 4 * 3600.0,
        delta: float = 0.01,
    ) -> None:
        self.home_id = home_id
        self.detector = detector
        self.min_samples = min_samples
        self.max_cycle_gap_s = max_cycle_gap_s
        self.delta = delta
        self.watches: dict[tuple[str, str], MetricWatch] = {}
        self.last_end: dict[str, datetime] = {}

    def clone(self) -> HealthMonitor:
        return HealthMonitor(
            self.home_id, self.detector, self.min_samples, self.max_cycle_gap_s, self.delta
        )

    def _watch(self, device: str, metric: str) -> MetricWatch:
        key = (device, metric)
        if key not in self.watches:
            self.watches[key] = MetricWatch(
                metric, self.detector, self.min_samples, delta=self.delta
            )
        return self.watches[key]

    def _update(self, device: str, metric: str, ts: datetime, value: float) -> list[Alert]:
        change = self._watch(device, metric).update(ts, value)
        if change is None:
            return []
        before, after, since = change
        unit, what, _ = METRICS[metric]
        verb = "rose" if after > before else "fell"
        pct = 100.0 * (after - before) / max(abs(before), 1e-9)
        message = (
            f"{device}: {what} {verb} from {_fmt(before, unit)} to {_fmt(after, unit)} "
            f"({pct:+.0f} %) since {since:%Y-%m-%d %H:%M} UTC"
        )
        logger.info("health alert for %s in home %s: %s", device, self.home_id, message)
        return [Alert(self.home_id, device, metric, ts, since, before, after, message)]

    def on_event(self, device: str, event: Event) -> list[Alert]:
        """An on event of `device`: its power step and inrush peak."""
        if event.delta_p_w <= 0:
            return []
        alerts = self._update(device, "delta_p_w", event.ts, event.delta_p_w)
        if event.inrush_peak_w > 0.2 * event.delta_p_w:
            alerts += self._update(device, "inrush_peak_w", event.ts, event.inrush_peak_w)
        return alerts

    def on_activation(self, run: Activation) -> list[Alert]:
        """A closed run of a known device: its duration and duty cycle."""
        if run.device is None or run.end_ts is None or run.duration_s is None:
            return []
        device = run.device
        alerts = self._update(device, "run_duration_s", run.end_ts, run.duration_s)
        if run.energy_wh is not None:
            alerts += self._update(device, "run_energy_wh", run.end_ts, run.energy_wh)
        previous = self.last_end.get(device)
        self.last_end[device] = run.end_ts
        if previous is not None:
            period = (run.end_ts - previous).total_seconds()
            if run.duration_s < period <= run.duration_s + self.max_cycle_gap_s:
                alerts += self._update(device, "duty_cycle", run.end_ts, run.duration_s / period)
        return alerts
