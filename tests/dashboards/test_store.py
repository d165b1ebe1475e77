"""DataStore: downsampling, ranges, queues, energy, and label writes that refuse bad input."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from dashboards.store import (
    AUTO_POINTS,
    CLUSTER_LABEL_PREFIX,
    DataStore,
    RangeProblem,
    ReadOnlyDatabase,
    UnknownCluster,
    UnknownEvent,
    choose_bucket_s,
)
from nilm.labelling import InvalidDeviceName
from tests.dashboards.conftest import FIXED_NOW, T0, label_count


def test_auto_resolution_keeps_a_month_to_a_few_thousand_points() -> None:
    bucket, note = choose_bucket_s(30 * 86400, "auto")
    assert 30 * 86400 / bucket <= AUTO_POINTS and note == ""


def test_one_second_over_a_month_is_coarsened_and_says_so() -> None:
    bucket, note = choose_bucket_s(30 * 86400, "1 s")
    assert bucket > 1
    assert "2,592,000 points" in note and "min" in note


def test_an_exact_resolution_is_kept_when_it_fits() -> None:
    assert choose_bucket_s(3 * 86400, "1 h") == (3600, "")
    assert choose_bucket_s(3600, "1 min") == (60, "")


def test_unknown_resolution_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of"):
        choose_bucket_s(60, "2 s")


def test_buckets_hold_every_reading_and_min_mean_max_are_ordered(store: DataStore) -> None:
    lo, hi = store.data_bounds()  # type: ignore[misc]
    view = store.power(lo, hi, "1 min")
    assert view.bucket_s == 60
    row = (
        store.connection.cursor()
        .execute(
            "SELECT count(*), avg(a_act_power + b_act_power) FROM readings "
            "WHERE ts >= ? AND ts < ?",
            [view.start, view.end],
        )
        .fetchone()
    )
    assert row is not None
    frame = view.frame
    assert int(frame["n"].sum()) == row[0]
    weighted = (frame["total_mean"] * frame["n"]).sum() / frame["n"].sum()
    assert weighted == pytest.approx(row[1], rel=1e-9)
    for key in ("total", "a", "b"):
        assert (frame[f"{key}_min"] <= frame[f"{key}_mean"] + 1e-9).all()
        assert (frame[f"{key}_mean"] <= frame[f"{key}_max"] + 1e-9).all()
    assert frame["total_mean"].to_numpy() == pytest.approx(
        (frame["a_mean"] + frame["b_mean"]).to_numpy()
    )
    assert frame["ts"].is_monotonic_increasing


def test_one_second_view_returns_raw_readings(store: DataStore) -> None:
    lo, _ = store.data_bounds()  # type: ignore[misc]
    view = store.power(lo, lo + timedelta(minutes=10), "1 s")
    assert view.bucket_s == 1
    assert 590 <= len(view.frame) <= 610
    assert (view.frame["total_min"] == view.frame["total_max"]).all()
    assert view.frame["total_pf"].between(-1.0, 1.0).all()


def test_auto_view_of_everything_stays_small(store: DataStore) -> None:
    lo, hi = store.data_bounds()  # type: ignore[misc]
    view = store.power(lo, hi)
    assert 0 < len(view.frame) <= AUTO_POINTS + 1


def test_a_range_in_the_future_is_refused_with_a_message(store: DataStore) -> None:
    _, hi = store.data_bounds()  # type: ignore[misc]
    with pytest.raises(RangeProblem, match="after the latest reading") as err:
        store.power(hi + timedelta(days=365), hi + timedelta(days=366))
    assert "future" in str(err.value)


def test_a_range_that_ends_before_it_starts_is_refused(store: DataStore) -> None:
    lo, _ = store.data_bounds()  # type: ignore[misc]
    with pytest.raises(RangeProblem, match="before it starts"):
        store.check_range(lo + timedelta(hours=1), lo)
    with pytest.raises(RangeProblem, match="both a start and an end"):
        store.check_range(None, lo)


def test_a_range_reaching_past_the_latest_reading_is_fine(store: DataStore) -> None:
    _, hi = store.data_bounds()  # type: ignore[misc]
    view = store.power(hi - timedelta(minutes=30), hi + timedelta(hours=5))
    assert len(view.frame) > 0


def test_empty_database_answers_with_empty_results(empty_store: DataStore) -> None:
    assert empty_store.data_bounds() is None
    assert empty_store.latest_power() is None
    assert empty_store.events().empty
    assert empty_store.labelling_queue().empty
    assert empty_store.clusters().empty
    assert empty_store.alerts().empty
    assert empty_store.device_names() == []
    with pytest.raises(RangeProblem, match="no readings yet"):
        empty_store.power(T0, T0 + timedelta(hours=1))


def test_queue_orders_by_uncertainty_then_novelty(store: DataStore) -> None:
    queue = store.labelling_queue(limit=500)
    assert len(queue) > 10
    known = queue["uncertainty"].dropna()
    assert known.is_monotonic_decreasing
    # events without an uncertainty (unknown clusters here) come after, most novel first
    tail = queue[queue["uncertainty"].isna()]
    assert tail.index.min() > known.index.max()
    assert tail["novelty"].is_monotonic_decreasing


def test_confirm_label_stores_one_row_and_leaves_the_queue(fresh_store: DataStore) -> None:
    first = fresh_store.labelling_queue().iloc[0]
    before = label_count(fresh_store)
    label_id = fresh_store.confirm_label(first["event_id"], "  heat   pump ")
    second = fresh_store.confirm_label(fresh_store.labelling_queue().iloc[0]["event_id"], "tv")
    assert second > label_id
    assert label_count(fresh_store) == before + 2
    row = (
        fresh_store.connection.cursor()
        .execute(
            "SELECT event_id, device, created_at, home_id, source FROM labels WHERE label_id = ?",
            [label_id],
        )
        .fetchone()
    )
    assert row is not None
    assert row[0] == first["event_id"] and row[1] == "heat pump"
    assert row[2] == FIXED_NOW and row[3] == "home" and row[4] == "dashboard"
    assert first["event_id"] not in set(fresh_store.labelling_queue(limit=1000)["event_id"])
    shown = fresh_store.events(device="heat pump")
    assert list(shown["event_id"]) == [first["event_id"]]
    assert shown["shown_device"].iloc[0] == "heat pump"


@pytest.mark.parametrize(
    ("name", "words"),
    [("", "empty"), ("   ", "empty"), ("x" * 200, "200 characters"), ("fr\x00idge", "control")],
)
def test_bad_device_names_write_nothing(fresh_store: DataStore, name: str, words: str) -> None:
    event_id = fresh_store.labelling_queue().iloc[0]["event_id"]
    with pytest.raises(InvalidDeviceName, match=words):
        fresh_store.confirm_label(event_id, name)
    assert label_count(fresh_store) == 0


def test_a_label_for_a_missing_event_writes_nothing(fresh_store: DataStore) -> None:
    event_id = fresh_store.labelling_queue().iloc[0]["event_id"]
    fresh_store.connection.execute("DELETE FROM events WHERE event_id = ?", [event_id])
    with pytest.raises(UnknownEvent, match="does not exist") as err:
        fresh_store.confirm_label(event_id, "fridge")
    assert "pick another event" in str(err.value)
    with pytest.raises(UnknownEvent, match="No event was chosen"):
        fresh_store.confirm_label("", "fridge")
    assert label_count(fresh_store) == 0


def test_a_label_for_another_home_is_refused(fresh_store: DataStore) -> None:
    event_id = fresh_store.labelling_queue().iloc[0]["event_id"]
    with pytest.raises(UnknownEvent, match="belongs to home 'home'"):
        fresh_store.confirm_label(event_id, "fridge", home_id="cabin")
    assert fresh_store.confirm_label(event_id, "fridge", home_id="home") >= 1


def test_naming_a_cluster_labels_all_its_events(fresh_store: DataStore) -> None:
    cluster = fresh_store.clusters().iloc[0]
    members = (
        fresh_store.connection.cursor()
        .execute("SELECT count(*) FROM events WHERE cluster_id = ?", [cluster["cluster_id"]])
        .fetchone()
    )
    ids = fresh_store.label_cluster(cluster["cluster_id"], "well pump")
    assert members is not None and len(ids) == members[0] + 1 > 1
    last = fresh_store.labels(limit=1).iloc[0]
    assert last["event_id"] == CLUSTER_LABEL_PREFIX + cluster["cluster_id"]
    assert last["label_id"] == ids[-1] and last["source"] == "dashboard-cluster"
    assert fresh_store.clusters().iloc[0]["name"] == "well pump"
    # naming it again adds nothing
    assert fresh_store.label_cluster(cluster["cluster_id"], "well pump") == []
    with pytest.raises(UnknownCluster, match="no events"):
        fresh_store.label_cluster("c-nothing", "well pump")
    with pytest.raises(InvalidDeviceName):
        fresh_store.label_cluster(cluster["cluster_id"], "")
    assert label_count(fresh_store) == len(ids)


def test_a_read_only_database_refuses_labels_plainly(sample_copy: Path) -> None:
    ro = duckdb.connect(str(sample_copy), read_only=True)
    store = DataStore(ro)
    assert store.read_only
    event_id = store.labelling_queue().iloc[0]["event_id"]
    with pytest.raises(ReadOnlyDatabase, match="nilm label"):
        store.confirm_label(event_id, "fridge")
    assert label_count(store) == 0
    ro.close()


def test_energy_breakdown_adds_up(store: DataStore) -> None:
    lo, hi = store.data_bounds()  # type: ignore[misc]
    parts = store.energy_breakdown(lo, hi)
    hours = (hi - lo).total_seconds() / 3600
    row = (
        store.connection.cursor()
        .execute("SELECT avg(a_act_power + b_act_power) FROM readings")
        .fetchone()
    )
    assert row is not None
    assert parts["total_wh"] == pytest.approx(row[0] * hours, rel=0.02)
    runs = store.connection.cursor().execute("SELECT sum(energy_wh) FROM activations").fetchone()
    assert runs is not None and parts["devices_wh"] == pytest.approx(runs[0])
    assert 0 < parts["always_on_w"] < 400
    assert parts["unexplained_wh"] == pytest.approx(
        max(parts["total_wh"] - parts["always_on_wh"] - parts["devices_wh"], 0.0)
    )


def test_device_summary_has_energy_share_runs_and_last_seen(store: DataStore) -> None:
    lo, hi = store.data_bounds()  # type: ignore[misc]
    summary = store.device_summary(lo, hi).set_index("device")
    fridge = summary.loc["fridge"]
    assert fridge["runs"] > 3 and fridge["energy_wh"] > 0
    assert 60 < fridge["typical_w"] < 200  # a ~95 W compressor, as measured
    assert 0 < fridge["share"] < 1
    assert fridge["runs_per_day"] == pytest.approx(fridge["runs"] / 0.5, rel=0.01)
    assert summary["share"].sum() <= 1.0


def test_devices_without_runs_still_show_their_events(empty_store: DataStore) -> None:
    con = empty_store.connection
    con.execute(
        "INSERT INTO readings (home_id, ts, a_act_power, b_act_power, a_aprt_power, b_aprt_power)"
        " VALUES ('home', ?, 100, 50, 110, 60), ('home', ?, 1100, 50, 1110, 60)",
        [T0, T0 + timedelta(seconds=1)],
    )
    con.execute(
        "INSERT INTO events (event_id, home_id, ts, legs, delta_p_w, device) "
        "VALUES ('e1', 'home', ?, 'a', 1000, 'kettle')",
        [T0 + timedelta(seconds=1)],
    )
    empty_store.invalidate()
    summary = empty_store.device_summary(T0, T0 + timedelta(hours=1))
    assert list(summary["device"]) == ["kettle"]
    assert summary["events"].iloc[0] == 1 and summary["energy_wh"].iloc[0] == 0


def test_each_thread_gets_its_own_cursor(store: DataStore) -> None:
    results: list[int] = []

    def work() -> None:
        results.append(len(store.events(limit=10)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [10, 10, 10, 10]
    assert len(store._cursors) >= 2


def test_labels_show_at_once_because_the_cache_is_dropped(fresh_store: DataStore) -> None:
    queue = fresh_store.labelling_queue()
    fresh_store.confirm_label(queue.iloc[0]["event_id"], "fridge")
    assert len(fresh_store.labelling_queue()) == len(queue) - 1 or len(queue) == 50
    assert queue.iloc[0]["event_id"] not in set(fresh_store.labelling_queue()["event_id"])


def test_the_cluster_label_prefix_matches_the_learners() -> None:
    from nilm.learning import CLUSTER_LABEL_PREFIX as LEARNERS

    assert CLUSTER_LABEL_PREFIX == LEARNERS


def test_queue_size_counts_every_unconfirmed_event(fresh_store: DataStore) -> None:
    total = fresh_store.connection.cursor().execute("SELECT count(*) FROM events").fetchone()
    assert total is not None and fresh_store.queue_size() == total[0]
    fresh_store.confirm_label(fresh_store.labelling_queue().iloc[0]["event_id"], "tv")
    assert fresh_store.queue_size() == total[0] - 1


def test_a_long_range_keeps_the_largest_events_newest_first(store: DataStore) -> None:
    everything = store.events()
    largest = store.events(limit=10, largest=True)
    assert len(largest) == 10 and largest["ts"].is_monotonic_decreasing
    threshold = everything["delta_p_w"].abs().nlargest(10).min()
    assert (largest["delta_p_w"].abs() >= threshold).all()
