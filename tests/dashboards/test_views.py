"""Views over what the real flow wrote: bad input gives a clear message and writes nothing;
controls do what they say; refreshes update the same charts."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pandas as pd
import pytest
from bokeh.document import Document

from dashboards.app import PAGES, build_app
from dashboards.devices import DevicesView
from dashboards.events import EventLog
from dashboards.health import HealthView
from dashboards.label import LabellingQueue
from dashboards.live import LivePowerView
from dashboards.store import DataStore
from dashboards.unknowns import UnknownsView
from dashboards.widgets import DevicePalette, Selection
from tests.dashboards.conftest import label_count, scalar


def _render(view: object) -> None:
    """Build the Bokeh models, as a browser session would (catches bad plot options)."""
    view.__panel__().get_root(Document())  # type: ignore[attr-defined]


# -- labelling --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "words"), [("", "empty"), ("k" * 200, "200 characters long; the limit is 64")]
)
def test_queue_refuses_bad_names_with_a_message(
    fresh_store: DataStore, name: str, words: str
) -> None:
    queue = LabellingQueue(fresh_store)
    assert queue.label_selected(name) == []
    assert queue.message.visible and queue.message.alert_type == "danger"
    assert words in queue.message.object
    assert label_count(fresh_store) == 0


def test_queue_refuses_a_label_for_an_event_that_has_gone(fresh_store: DataStore) -> None:
    queue = LabellingQueue(fresh_store)
    gone = queue.selected()
    assert gone is not None
    fresh_store.connection.execute("DELETE FROM events WHERE event_id = ?", [gone["event_id"]])
    assert queue.label_selected("fridge") == []
    assert "does not exist" in queue.message.object
    assert label_count(fresh_store) == 0
    # the refresh after the error drops the vanished event from the queue
    assert gone["event_id"] not in set(queue.table.value["event_id"])


def test_queue_confirms_the_prediction_in_one_click(fresh_store: DataStore) -> None:
    queue = LabellingQueue(fresh_store)
    frame = queue.table.value
    predicted_rows = [i for i, d in enumerate(frame["device"]) if isinstance(d, str)]
    queue.table.selection = [predicted_rows[0]]
    row = queue.selected()
    assert row is not None
    assert queue.confirm.label == f"✓ It is {row['device']}" and not queue.confirm.disabled
    queue.confirm.clicks += 1  # what a click in the browser does
    assert label_count(fresh_store) == 1
    assert queue.message.alert_type == "success" and row["device"] in queue.message.object
    stored = fresh_store.labels(limit=1).iloc[0]
    assert (stored["event_id"], stored["device"]) == (row["event_id"], row["device"])
    assert row["event_id"] not in set(queue.table.value["event_id"])


def test_queue_names_a_new_device(fresh_store: DataStore) -> None:
    calls: list[int] = []
    queue = LabellingQueue(fresh_store, on_label=lambda: calls.append(1))
    row = queue.selected()
    assert row is not None
    queue.whole_cluster.value = False
    queue.new_name.value = " Kettle  "
    queue.new_button.clicks += 1
    assert fresh_store.labels(limit=1).iloc[0]["device"] == "Kettle"
    assert calls == [1] and queue.new_name.value == ""
    assert "Kettle" in fresh_store.device_names()
    assert "Kettle" in queue.pick.options


def test_queue_labels_a_whole_cluster_when_asked(fresh_store: DataStore) -> None:
    queue = LabellingQueue(fresh_store)
    frame = queue.table.value
    in_cluster = [i for i, c in enumerate(frame["cluster_id"]) if isinstance(c, str)]
    queue.table.selection = [in_cluster[0]]
    assert queue.whole_cluster.visible
    assert not queue.whole_cluster.value  # one event unless the person asks for the group
    one = queue.label_selected("well pump")
    assert len(one) == 1
    queue.table.selection = [i for i, c in enumerate(queue.table.value["cluster_id"])
                             if c == frame.iloc[in_cluster[0]]["cluster_id"]][:1]  # fmt: skip
    queue.whole_cluster.value = True
    ids = queue.label_selected("well pump")
    cluster = frame.iloc[in_cluster[0]]["cluster_id"]
    members = (
        fresh_store.connection.cursor()
        .execute("SELECT count(*) FROM events WHERE cluster_id = ?", [cluster])
        .fetchone()
    )
    # every event but the one labelled already, and the group itself
    assert members is not None and len(ids) == members[0] - 1 + 1 > 2


def test_read_only_queue_explains_and_disables_labelling(store: DataStore) -> None:
    queue = LabellingQueue(store, read_only=True)
    assert queue.confirm.disabled and queue.new_button.disabled
    assert "read-only" in queue.message.object and "nilm label" in queue.message.object


def test_unknowns_view_names_a_cluster_or_says_why_not(fresh_store: DataStore) -> None:
    view = UnknownsView(fresh_store)
    assert view.name_selected("") == []
    assert "empty" in view.message.object and label_count(fresh_store) == 0
    named = view.selected_cluster()
    ids = view.name_selected("well pump")
    assert ids and label_count(fresh_store) == len(ids)
    assert named not in set(view.clusters.value["cluster_id"])  # a named group leaves the list


# -- live chart -------------------------------------------------------------------------------
def test_a_future_date_range_says_so_and_keeps_the_chart(store: DataStore) -> None:
    live = LivePowerView(store)
    shown = live.last_view
    assert shown is not None and len(shown.frame) > 0
    _, hi = store.data_bounds()  # type: ignore[misc]
    far = hi.replace(tzinfo=None) + timedelta(days=400)
    live.range.value = (far, far + timedelta(days=1))
    assert not live.live.value  # picking a range stops following live data
    assert live.message.visible and "future" in live.message.object
    assert live.last_view is shown


def test_a_past_range_draws_downsampled_power_and_events(store: DataStore) -> None:
    live = LivePowerView(store)
    lo, _ = store.data_bounds()  # type: ignore[misc]
    start = lo.replace(tzinfo=None)
    live.range.value = (start, start + timedelta(hours=6))
    view = live.last_view
    assert view is not None and view.bucket_s == 15
    assert len(view.frame) <= 6 * 3600 / 15 + 1
    data = live.data
    in_range = scalar(
        store, "SELECT count(*) FROM events WHERE ts >= ? AND ts < ?", [view.start, view.end]
    )
    assert len(data["on"]) + len(data["off"]) == in_range > 3
    assert set(data["on"]["color"]) <= set(live.palette._colors.values()) | {"#9e9e9e"}
    _render(live)


def test_live_mode_follows_the_latest_reading(store: DataStore) -> None:
    live = LivePowerView(store)
    assert live.live.value
    _, hi = store.data_bounds()  # type: ignore[misc]
    assert live.last_view is not None
    assert hi - live.last_view.end < timedelta(seconds=2)
    assert live.now.value == round(store.latest_power()["total"])  # type: ignore[index]


@pytest.mark.parametrize("legs", ["both", "a"])
def test_legs_apparent_and_pf_options_render(store: DataStore, legs: str) -> None:
    live = LivePowerView(store)
    live.legs.value = legs
    live.apparent.value = True
    live.pf.value = True
    _render(live)
    frame = live.data["power"]
    for key in ("a", "b"):
        assert frame[f"{key}_va"].notna().all() and frame[f"{key}_pf"].between(0, 1).all()


def test_clicking_an_event_zooms_the_chart_to_it(store: DataStore) -> None:
    selection = Selection()
    palette = DevicePalette(store.device_names())
    live = LivePowerView(store, palette, selection)
    log = EventLog(store, selection, palette)
    log._clicked(SimpleNamespace(row=3, column="ts"))
    event = store.event(log.table.value.iloc[3]["event_id"])
    assert event is not None
    assert not live.live.value
    assert live.last_view is not None
    assert live.last_view.start <= event["ts"] <= live.last_view.end
    assert live.last_view.end - live.last_view.start == timedelta(minutes=10)


def test_event_log_filters(store: DataStore) -> None:
    log = EventLog(store)
    everything = len(log.table.value)
    log.device.value = "fridge"
    assert 0 < len(log.table.value) < everything
    assert set(log.table.value["shown_device"]) == {"fridge"}
    log.direction.value = "on"
    assert (log.table.value["delta_p_w"] > 0).all()
    log.device.value = "all devices"
    log.min_dp.value = 2000
    assert (log.table.value["delta_p_w"].abs() >= 2000).all()


# -- devices, health, whole app ---------------------------------------------------------------
def test_devices_page_shows_energy_and_says_when_runs_are_missing(
    store: DataStore, empty_store: DataStore
) -> None:
    view = DevicesView(store)
    assert view.total.value > 0 and view.base.value > 0
    assert "fridge" in " ".join(view.table.value["device"])
    _render(view)
    empty = DevicesView(empty_store)
    assert "No readings yet" in empty.message.object


def test_health_view_shows_alerts_with_before_and_after(fresh_store: DataStore) -> None:
    from flows.sink import write_items
    from nilm.health import Alert

    assert "No health alerts" in HealthView(fresh_store).cards.objects[0].object
    _, hi = fresh_store.data_bounds()  # type: ignore[misc]
    alert = Alert("home", "fridge", "delta_p_w", hi, hi - timedelta(hours=2), 125.0, 152.0,
                  "draws more when on")  # fmt: skip
    write_items(fresh_store.connection.cursor(), [("alerts", alert.row())])  # as the flow does
    fresh_store.invalidate()
    text = HealthView(fresh_store).cards.objects[0].object
    assert "fridge" in text and "125.0 → 152.0" in text and "+22%" in text


def test_whole_app_builds_and_renders_on_an_empty_database(empty_store: DataStore) -> None:
    template = build_app(empty_store)
    app = template._nilm_app
    for index in range(len(PAGES)):
        app.tabs.active = index
        app.refresh()
    assert "No readings yet" in app.live.message.object
    assert "Nothing to label" in app.queue.count.object
    assert "No unnamed groups" in app.unknowns.count.object
    for view in (app.live, app.events, app.queue, app.devices, app.unknowns, app.health):
        _render(view)


def test_whole_app_on_the_sample_switches_to_the_chart_when_an_event_is_chosen(
    store: DataStore,
) -> None:
    app = build_app(store)._nilm_app
    app.tabs.active = PAGES.index("Events")
    app.events._clicked(SimpleNamespace(row=0, column="ts"))
    assert app.tabs.active == PAGES.index("Live")
    assert not app.live.live.value


def test_queue_does_not_move_under_the_cursor_until_reloaded(fresh_store: DataStore) -> None:
    queue = LabellingQueue(fresh_store)
    shown = queue.table.value.copy()
    queue.table.selection = [2]
    fresh_store.connection.execute(
        "INSERT INTO events (event_id, home_id, ts, legs, delta_p_w, uncertainty) "
        "SELECT 'newest', 'home', max(ts), 'a', 500, 2.0 FROM events"
    )
    fresh_store.invalidate()
    queue.refresh()
    assert queue.table.value.equals(shown) and queue.table.selection == [2]
    assert queue.reload_button.visible and "1 new" in queue.count.object
    chosen = shown.iloc[2]["event_id"]
    queue.reload_button.clicks += 1
    assert "newest" in set(queue.table.value["event_id"])
    assert queue.selected()["event_id"] == chosen  # type: ignore[index]
    assert not queue.reload_button.visible


def test_live_options_show_only_what_is_asked(store: DataStore) -> None:
    live = LivePowerView(store)
    assert not live.pf_plot.visible
    assert [r.visible for r in live.renderers["a"]] == [False, False]
    live.pf.value = True
    live.legs.value = "both"
    assert live.pf_plot.visible
    assert all(r.visible for r in live.renderers["a"] + live.renderers["b"])
    assert not any(r.visible for r in live.renderers["total"] + live.renderers["a_va"])
    live.apparent.value = True
    assert live.renderers["a_va"][0].visible and "leg b apparent (VA)" in live.legend.object


def test_the_range_picker_shows_the_live_window(store: DataStore) -> None:
    live = LivePowerView(store, window="15 min")
    view = live.last_view
    assert view is not None and view.end - view.start == timedelta(minutes=15)
    start, end = live.range.value
    assert live.live.value  # showing the window in the picker did not pause live mode
    assert abs((end - view.end.replace(tzinfo=None)).total_seconds()) < 1
    assert abs((start - view.start.replace(tzinfo=None)).total_seconds()) < 1
    assert len(live.power_source.data["ts"]) == len(view.frame)


def test_an_older_database_without_newer_columns_still_shows_every_page(
    empty_store: DataStore,
) -> None:
    con = empty_store.connection
    con.execute("ALTER TABLE activations DROP COLUMN abandoned")
    con.execute(
        "INSERT INTO readings (home_id, ts, a_act_power, b_act_power, a_aprt_power, b_aprt_power)"
        " VALUES ('home', TIMESTAMPTZ '2026-01-05 00:00:00+00', 100, 50, 110, 60)"
    )
    store = DataStore(con)
    app = build_app(store)._nilm_app
    for index in range(len(PAGES)):
        app.tabs.active = index
    assert all(
        not any(getattr(o, "alert_type", "") == "danger" for o in slot.objects)
        for slot in app._slots.values()
    )
    assert app.devices.table.value is not None


def test_a_page_that_fails_says_so_and_the_others_work(
    store: DataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(store)._nilm_app

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(DevicesView, "refresh", broken)
    app.tabs.active = PAGES.index("Devices")
    alert = app._slots["Devices"].objects[0]
    assert alert.alert_type == "danger" and "disk on fire" in alert.object
    app.tabs.active = PAGES.index("Events")
    assert len(app.events.table.value) > 0


# -- light pages: the same models, updated in place -------------------------------------------
def _grow(store: DataStore, seconds: int) -> None:
    """What the flow does meanwhile: `seconds` more readings after the latest, and an event."""
    con = store.connection.cursor()
    con.execute(
        "INSERT INTO readings SELECT r.* REPLACE (r.ts + INTERVAL (k) SECOND AS ts, r.seq + k "
        "AS seq) FROM (SELECT * FROM readings ORDER BY ts DESC LIMIT 1) r, range(1, ?) t(k)",
        [seconds + 1],
    )
    con.execute(
        "INSERT INTO events (event_id, home_id, ts, legs, delta_p_w) "
        "SELECT 'grown-' || epoch(max(ts))::VARCHAR, 'home', max(ts), 'a', 700 FROM readings"
    )
    store.invalidate()


def test_every_page_keeps_its_bokeh_models_across_refreshes(fresh_store: DataStore) -> None:
    template = build_app(fresh_store)
    app = template._nilm_app
    doc = Document()
    template.server_doc(doc)
    for index, page in enumerate(PAGES):
        app.tabs.active = index
        app.refresh()
        before = {m.id for m in doc.models}
        for _ in range(3):
            _grow(fresh_store, 30)
            app.refresh()
        after = {m.id for m in doc.models}
        assert after == before, f"the {page} page built new models on a refresh"


def test_live_refresh_streams_new_readings_onto_the_same_chart(fresh_store: DataStore) -> None:
    live = LivePowerView(
        fresh_store,
        window="15 min",
    )
    source = live.power_source
    shown = len(source.data["ts"])
    _grow(fresh_store, 20)
    live.refresh()
    assert live.power_source is source
    view = live.last_view
    assert view is not None and len(source.data["ts"]) == len(view.frame) >= shown
    assert source.data["ts"][-1] == view.frame["ts"].to_numpy("datetime64[ns]")[-1]
    assert (source.data["total_mean"] == view.frame["total_mean"].to_numpy()).all()


def test_markers_sit_at_the_top_of_their_step(store: DataStore) -> None:
    biggest = store.events(limit=1, largest=True).iloc[0]
    live = LivePowerView(store)
    live.zoom_to_event(str(biggest["event_id"]))
    kind = "on" if biggest["delta_p_w"] > 0 else "off"
    marker = live.data[kind].set_index("event_id").loc[biggest["event_id"]]
    ts = biggest["ts"]
    ramp = 0.0 if pd.isna(biggest["ramp_s"]) else float(biggest["ramp_s"])
    lo, hi = (ts + timedelta(seconds=ramp + 2), ts + timedelta(seconds=ramp + 12)) if kind == "on" \
        else (ts - timedelta(seconds=12), ts - timedelta(seconds=2))  # fmt: skip
    level = scalar(
        store,
        "SELECT avg(a_act_power + b_act_power) FROM readings WHERE ts >= ? AND ts < ?",
        [lo.tz_localize("UTC"), hi.tz_localize("UTC")],
    )
    # at the level after an on step (before an off step), not half-way up the step
    assert abs(marker["y"] - level) < 0.2 * abs(biggest["delta_p_w"])  # type: ignore[operator]


def test_live_page_says_what_is_on_now(store: DataStore) -> None:
    live = LivePowerView(store)
    now = live.last_snapshot
    assert now is not None and now.running
    for device in now.running:
        assert device.device in live.on_now.object
    assert "always on" in live.on_now.object and "unexplained" in live.on_now.object


def test_live_refresh_leaves_a_range_being_picked_alone(fresh_store: DataStore) -> None:
    live = LivePowerView(fresh_store)
    picked = live.range.value
    _grow(fresh_store, 60)
    live.refresh()
    assert live.live.value and live.range.value == picked
    assert live.last_view is not None and live.last_view.end.replace(tzinfo=None) > picked[1]


def test_events_that_change_or_vanish_between_refreshes(fresh_store: DataStore) -> None:
    app = build_app(fresh_store)._nilm_app
    app.tabs.active = PAGES.index("Events")
    gone = str(app.events.table.value.iloc[0]["event_id"])
    fresh_store.connection.execute("DELETE FROM events WHERE event_id = ?", [gone])
    fresh_store.invalidate()
    for index in range(len(PAGES)):
        app.tabs.active = index
        app.refresh()
    assert gone not in set(app.events.table.value["event_id"])
    assert gone not in set(app.live.data["on"]["event_id"]) | set(app.live.data["off"]["event_id"])


def test_time_axes_keep_the_hour_and_energy_per_day_has_a_legend(store: DataStore) -> None:
    live = LivePowerView(store)
    formatter = live.figure.xaxis[0].formatter
    assert "%H" in formatter.minutes and "%H" in formatter.minsec
    devices = DevicesView(store)
    items = devices.per_day_figure.legend[0].items
    assert items and items[0].label.field == "device"
    assert len(devices.per_day_source.data["device"]) > 0


def test_the_label_message_is_in_sight_after_a_label(fresh_store: DataStore) -> None:
    queue = LabellingQueue(fresh_store)
    queue.label_selected("kettle")
    layout = queue.__panel__()
    assert layout.objects[0] is queue.message and queue.message.alert_type == "success"
    assert queue.message.styles.get("position") == "sticky"
