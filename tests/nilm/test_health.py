"""Device health: alerts say what changed and since when; a steady device raises none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from nilm.health import HealthMonitor, MetricWatch
from nilm.pairing import Activation
from nilm.records import Event

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def fridge_runs(n: int, change_at: int | None, factor: float, seed: int = 0) -> list[Activation]:
    """A fridge cycling every ~40 min; from run `change_at` it draws and runs `factor` more."""
    rng = np.random.default_rng(seed)
    runs, t = [], T0
    for i in range(n):
        k = factor if change_at is not None and i >= change_at else 1.0
        run_s = float(rng.uniform(780, 1020)) * k
        power = float(125.0 * k + rng.normal(0, 3.0))
        end = t + timedelta(seconds=run_s)
        runs.append(Activation(f"r{i}", "h", "fridge", "a", f"r{i}", t, power, f"o{i}", end,
                               power, power * run_s / 3600))  # fmt: skip
        t = end + timedelta(seconds=float(rng.uniform(1200, 1500)))
    return runs


def on_event(run: Activation) -> Event:
    return Event(run.on_event_id, "h", run.start_ts, "a", run.power_w, 0.0, run.power_w, 0.0,
                 0.0, 80.0, 80.0 + run.power_w, run.power_w, 0.0, 120.0)  # fmt: skip


def feed(monitor: HealthMonitor, runs: list[Activation]) -> list:
    alerts = []
    for run in runs:
        alerts += monitor.on_event("fridge", on_event(run))
        alerts += monitor.on_activation(run)
    return alerts


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_steady_fridge_raises_no_alert_over_two_weeks(seed: int) -> None:
    assert feed(HealthMonitor("h"), fridge_runs(14 * 37, None, 1.0, seed)) == []


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_a_fridge_drawing_and_running_longer_is_reported_with_when_and_how_much(
    detector: str,
) -> None:
    runs = fridge_runs(14 * 37, 7 * 37, 1.25)
    onset = runs[7 * 37].start_ts
    alerts = feed(HealthMonitor("h", detector=detector), runs)
    assert alerts and {a.device for a in alerts} == {"fridge"}
    first = min(alerts, key=lambda a: a.ts)
    assert onset <= first.ts <= onset + timedelta(hours=24)
    # "Since when" points at the change, within a couple of cycles.
    assert abs((first.since_ts - onset).total_seconds()) <= 3 * 3600
    assert first.after_value > first.before_value
    assert "rose" in first.message and "since" in first.message
    metrics = {a.metric for a in alerts}
    assert "delta_p_w" in metrics or "run_energy_wh" in metrics


def test_metric_watch_needs_a_baseline_and_a_known_metric() -> None:
    w = MetricWatch("run_duration_s", min_samples=30)
    # A jump within the baseline period is no alert: there is nothing to compare with yet.
    assert [w.update(T0 + timedelta(hours=i), 900.0 * (2 if i > 10 else 1)) for i in range(20)] \
        == [None] * 20
    with pytest.raises(ValueError, match="unknown metric"):
        MetricWatch("colour")
    with pytest.raises(ValueError, match="unknown detector"):
        MetricWatch("delta_p_w", detector="psychic")
