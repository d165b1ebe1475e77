"""What is on now: the devices running at this moment, the always-on base and the unexplained.

The dashboard's Live page and the Home Assistant publisher show the same list, built here from
the open activations (runs whose on event has no off yet) and the latest whole-house power.
Pure: whoever owns the database runs `OPEN_ACTIVATIONS_SQL` and hands the rows in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "MINUTE_POWER_SQL",
    "OPEN_ACTIVATIONS_SQL",
    "UNKNOWN_DEVICE",
    "NowSnapshot",
    "RunningDevice",
    "what_is_on",
]

# The name shown for a run whose device is not recognised (yet).
UNKNOWN_DEVICE = "(unknown)"

# One-minute mean whole-house power over the day before `$latest`, for the always-on base
# (`nilm.pairing.always_on_base_w` of them; the Live page and Home Assistant show the same).
MINUTE_POWER_SQL = """
SELECT avg(a_act_power + b_act_power) AS p FROM readings
WHERE home_id = $home_id AND ts > $latest - INTERVAL 1 DAY AND ts <= $latest
GROUP BY epoch_us(ts) // 60000000
"""

# Runs of a home that are open now: started, not closed, not given up. `$home_id` is bound by the
# caller; a run is the device its on event was last confirmed as (a label is the truth), else
# the one it was paired as, and the on event's cluster says which unknown group an unrecognised
# run belongs to. The Live page and Home Assistant both read it, so they show the same list.
OPEN_ACTIVATIONS_SQL = """
SELECT a.activation_id, coalesce(l.confirmed, a.device) AS device, a.legs, a.start_ts,
       a.power_w, a.on_event_id, e.cluster_id
FROM activations a
LEFT JOIN events e ON e.event_id = a.on_event_id
LEFT JOIN (
    SELECT event_id, arg_max(device, label_id) AS confirmed FROM labels GROUP BY event_id
) l ON l.event_id = a.on_event_id
WHERE a.home_id = $home_id AND a.end_ts IS NULL AND NOT coalesce(a.abandoned, FALSE)
ORDER BY a.start_ts, a.activation_id
"""


@dataclass(frozen=True, slots=True)
class RunningDevice:
    """One device running now: its name (or `UNKNOWN_DEVICE`), its draw and since when."""

    device: str
    power_w: float
    legs: str
    since: datetime
    runs: int = 1
    cluster_id: str | None = None


@dataclass(frozen=True, slots=True)
class NowSnapshot:
    """The house at one moment: total and per-leg power, what runs, the base, the rest.

    `unexplained_w` is what the total leaves after the always-on base and every running device
    (never negative); `explained_w` is the sum of the running devices' draw.
    """

    at: datetime | None
    total_w: float
    legs_w: Mapping[str, float]
    running: tuple[RunningDevice, ...]
    always_on_w: float
    unexplained_w: float

    @property
    def explained_w(self) -> float:
        return float(sum(d.power_w for d in self.running))


def _f(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def what_is_on(
    open_runs: Iterable[Mapping[str, Any]],
    legs_w: Mapping[str, float],
    always_on_w: float,
    at: datetime | None = None,
) -> NowSnapshot:
    """The snapshot from open runs (rows of `OPEN_ACTIVATIONS_SQL`) and the latest leg powers.

    Runs of one device are summed (two burners of one stove are one stove drawing both); runs
    with no device are grouped by their unknown cluster. Largest draw first, then by name, so
    the order never depends on the order of the rows.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 5, 8, tzinfo=UTC)
    >>> runs = [
    ...     {"device": "fridge", "legs": "a", "start_ts": t, "power_w": 95.0},
    ...     {"device": None, "legs": "b", "start_ts": t, "power_w": 60.0, "cluster_id": "c1"},
    ...     {"device": "oven", "legs": "ab", "start_ts": t, "power_w": 2400.0},
    ... ]
    >>> now = what_is_on(runs, {"a": 1400.0, "b": 1500.0}, always_on_w=150.0)
    >>> [(d.device, d.power_w) for d in now.running]
    [('oven', 2400.0), ('fridge', 95.0), ('(unknown)', 60.0)]
    >>> now.total_w, now.unexplained_w
    (2900.0, 195.0)
    """
    groups: dict[tuple[str, str | None], list[Mapping[str, Any]]] = {}
    for run in open_runs:
        power = _f(run.get("power_w"))
        if not math.isfinite(power) or power <= 0:
            continue
        device = run.get("device") or None
        key = (device, None) if device else (UNKNOWN_DEVICE, run.get("cluster_id") or None)
        groups.setdefault(key, []).append(run)
    running = []
    for (device, cluster_id), runs in groups.items():
        legs = "".join(sorted(set("".join(str(r.get("legs") or "") for r in runs))))
        running.append(
            RunningDevice(
                device=device,
                power_w=float(sum(_f(r["power_w"]) for r in runs)),
                legs=legs,
                since=min(r["start_ts"] for r in runs),
                runs=len(runs),
                cluster_id=cluster_id,
            )
        )
    running.sort(key=lambda d: (-d.power_w, d.device, d.cluster_id or ""))
    finite_legs = {k: float(v) for k, v in legs_w.items() if math.isfinite(_f(v))}
    total = float(sum(finite_legs.values()))
    base = _f(always_on_w)
    base = base if math.isfinite(base) and base > 0 else 0.0
    explained = float(sum(d.power_w for d in running))
    return NowSnapshot(
        at=at,
        total_w=total,
        legs_w=finite_legs,
        running=tuple(running),
        always_on_w=base,
        unexplained_w=max(total - base - explained, 0.0),
    )
