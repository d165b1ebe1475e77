"""What is on now: open runs and the latest power give the running devices and the rest."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from nilm.now import UNKNOWN_DEVICE, what_is_on

T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)


def test_runs_of_one_device_add_up_and_unknowns_group_by_cluster() -> None:
    runs = [
        {"device": "stove", "legs": "a", "start_ts": T0, "power_w": 1200.0},
        {"device": "stove", "legs": "b", "start_ts": T0 - timedelta(minutes=5), "power_w": 800.0},
        {"device": None, "legs": "a", "start_ts": T0, "power_w": 70.0, "cluster_id": "c1"},
        {"device": None, "legs": "b", "start_ts": T0, "power_w": 40.0, "cluster_id": "c2"},
    ]
    now = what_is_on(runs, {"a": 1500.0, "b": 1000.0}, always_on_w=120.0, at=T0)
    assert [(d.device, d.power_w, d.legs, d.runs) for d in now.running] == [
        ("stove", 2000.0, "ab", 2),
        (UNKNOWN_DEVICE, 70.0, "a", 1),
        (UNKNOWN_DEVICE, 40.0, "b", 1),
    ]
    assert now.running[0].since == T0 - timedelta(minutes=5)
    assert now.explained_w == 2110.0
    assert now.unexplained_w == 2500.0 - 120.0 - 2110.0


def test_order_does_not_depend_on_row_order_and_bad_rows_are_left_out() -> None:
    runs = [
        {"device": f"d{i}", "legs": "a", "start_ts": T0, "power_w": float(100 + i % 3)}
        for i in range(9)
    ]
    runs.append({"device": "broken", "legs": "a", "start_ts": T0, "power_w": None})
    runs.append({"device": "negative", "legs": "a", "start_ts": T0, "power_w": -50.0})
    shuffled = runs[:]
    random.Random(4).shuffle(shuffled)
    first = what_is_on(runs, {"a": 2000.0}, 0.0)
    second = what_is_on(shuffled, {"a": 2000.0}, 0.0)
    assert first == second
    assert {d.device for d in first.running} == {f"d{i}" for i in range(9)}


def test_more_running_than_the_house_draws_leaves_nothing_unexplained() -> None:
    runs = [{"device": "heater", "legs": "a", "start_ts": T0, "power_w": 1500.0}]
    now = what_is_on(runs, {"a": 1000.0, "b": float("nan")}, always_on_w=float("nan"))
    assert now.unexplained_w == 0.0 and now.always_on_w == 0.0 and now.total_w == 1000.0
