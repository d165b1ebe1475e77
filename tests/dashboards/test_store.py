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
from tests.dashboards.conftest import FIXED_NOW, T0, label_count, scalar


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


def test_queue_puts_what_teaches_most_first(store: DataStore) -> None:
    queue = store.labelling_queue(limit=500)
    assert len(queue) > 10
    assert queue["teach"].is_monotonic_decreasing
    unnamed = store.clusters()
    unnamed = unnamed[unnamed["cluster_id"].isin(set(queue["cluster_id"]))]
    assert len(unnamed) >= 2
    largest, lone = unnamed.iloc[0], unnamed.iloc[-1]
    assert largest["n_events"] > lone["n_events"]
    position = {c: queue.index[queue["cluster_id"] == c].min() for c in unnamed["cluster_id"]}
    # an event of the largest unnamed group before any of the smallest one
    assert position[largest["cluster_id"]] < position[lone["cluster_id"]]
    # and not a wall of one group: another group's first event comes within the first three
    assert queue["cluster_id"].iloc[:3].nunique() >= 2


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
    named = fresh_store.clusters(unnamed_only=False).set_index("cluster_id")
    assert named.loc[cluster["cluster_id"], "name"] == "well pump"
    assert cluster["cluster_id"] not in set(fresh_store.clusters()["cluster_id"])
    # naming it again adds nothing
    assert fresh_store.label_cluster(cluster["cluster_id"], "well pump") == []
    with pytest.raises(UnknownCluster, match="no events"):
        fresh_store.label_cluster("c-nothing", "well pump")
    with pytest.raises(InvalidDeviceName):
        fresh_store.label_cluster(cluster["cluster_id"], "")
    assert label_count(fresh_store) == len(ids)


def test_a_read_only_database_refuses_labels_plainly(flow_copy: Path) -> None:
    ro = duckdb.connect(str(flow_copy), read_only=True)
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
    runs = (
        store.connection.cursor()
        .execute(
            "SELECT coalesce(device, '(unknown)'), count(*), sum(energy_wh), median(power_w) "
            "FROM activations WHERE NOT coalesce(abandoned, FALSE) GROUP BY 1"
        )
        .fetchall()
    )
    assert runs
    days = (hi - lo).total_seconds() / 86400
    for device, count, energy, typical in runs:
        row = summary.loc[device]
        assert row["runs"] == count and row["energy_wh"] == pytest.approx(energy or 0.0)
        assert row["typical_w"] == pytest.approx(typical)
        assert row["runs_per_day"] == pytest.approx(count / days, rel=0.01)
    labelled = set(store.labels()["device"])
    assert labelled <= set(summary.index)  # a confirmed device shows before it has runs
    assert 0 < summary["share"].sum() <= 1.0


def test_two_groups_given_one_name_show_as_one_device(fresh_store: DataStore) -> None:
    groups = fresh_store.clusters()
    first, second = groups.iloc[0]["cluster_id"], groups.iloc[1]["cluster_id"]
    fresh_store.label_cluster(first, "dryer")
    fresh_store.label_cluster(second, "dryer")
    lo, hi = fresh_store.data_bounds()  # type: ignore[misc]
    summary = fresh_store.device_summary(lo, hi)
    assert list(summary["device"]).count("dryer") == 1
    members = scalar(
        fresh_store, "SELECT count(*) FROM events WHERE cluster_id IN (?, ?)", [first, second]
    )
    assert summary.set_index("device").loc["dryer", "events"] == members
    assert not {first, second} & set(fresh_store.clusters()["cluster_id"])


def test_what_is_on_now_lists_the_open_runs(store: DataStore) -> None:
    now = store.now()
    open_runs = (
        store.connection.cursor()
        .execute(
            "SELECT coalesce(device, '(unknown)'), sum(power_w) FROM activations "
            "WHERE end_ts IS NULL AND NOT coalesce(abandoned, FALSE) AND power_w > 0 GROUP BY 1"
        )
        .fetchall()
    )
    shown: dict[str, float] = {}
    for d in now.running:
        shown[d.device] = shown.get(d.device, 0.0) + d.power_w
    assert shown == pytest.approx(dict(open_runs))
    latest = store.latest_power()
    assert latest is not None and now.total_w == pytest.approx(latest["total"])
    assert 0 < now.always_on_w < now.total_w
    assert now.unexplained_w == pytest.approx(
        max(now.total_w - now.always_on_w - now.explained_w, 0.0)
    )


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
    assert queue.iloc[0]["event_id"] not in set(fresh_store.labelling_queue()["event_id"])


def test_the_cluster_label_prefix_matches_the_learners() -> None:
    from nilm.learning import CLUSTER_LABEL_PREFIX as LEARNERS

    assert CLUSTER_LABEL_PREFIX == LEARNERS


def test_queue_size_counts_every_unconfirmed_event(fresh_store: DataStore) -> None:
    waiting = scalar(
        fresh_store,
        "SELECT count(*) FROM events e WHERE NOT coalesce(labelled, FALSE) AND NOT EXISTS "
        "(SELECT 1 FROM labels l WHERE l.event_id = e.event_id)",
    )
    assert fresh_store.queue_size() == waiting > 0
    fresh_store.confirm_label(fresh_store.labelling_queue().iloc[0]["event_id"], "tv")
    assert fresh_store.queue_size() == waiting - 1  # type: ignore[operator]


def test_a_long_range_keeps_the_largest_events_newest_first(store: DataStore) -> None:
    everything = store.events()
    largest = store.events(limit=10, largest=True)
    assert len(largest) == 10 and largest["ts"].is_monotonic_decreasing
    threshold = everything["delta_p_w"].abs().nlargest(10).min()
    assert (largest["delta_p_w"].abs() >= threshold).all()


def test_an_open_run_of_an_unknown_device_shows_as_unknown(fresh_store: DataStore) -> None:
    from dashboards.live import now_html
    from dashboards.widgets import DevicePalette

    # a run the flow opened for an event it could not name: device NULL, cluster on the event
    on = (
        fresh_store.connection.cursor()
        .execute(
            "SELECT event_id, ts, cluster_id FROM events WHERE delta_p_w > 0 "
            "AND cluster_id IS NOT NULL ORDER BY ts DESC LIMIT 1"
        )
        .fetchone()
    )
    assert on is not None

    def in_group() -> list[tuple[str, float]]:
        return [(d.device, d.power_w) for d in fresh_store.now().running if d.cluster_id == on[2]]

    before = sum(w for _, w in in_group())  # the flow may hold an open run of that group too
    fresh_store.connection.execute(
        "INSERT INTO activations (activation_id, home_id, device, legs, on_event_id, start_ts, "
        "power_w) VALUES ('open-unknown', 'home', NULL, 'a', ?, ?, 321.0)",
        [on[0], on[1]],
    )
    fresh_store.invalidate()
    assert in_group() == [("(unknown)", pytest.approx(before + 321.0))]
    assert f"(unknown) group {on[2]}" in now_html(fresh_store.now(), DevicePalette())
