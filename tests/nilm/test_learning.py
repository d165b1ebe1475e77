"""HomeLearner: predictions, the label loop, restarts, clusters of the unknown, determinism."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta

from nilm.learning import CLUSTER_LABEL_PREFIX, HomeLearner, TableRow
from nilm.records import Event, Label, event_id_for

T0 = datetime(2026, 1, 5, tzinfo=UTC)

# (legs, on-step W, Q/P, inrush x): hand-made devices that a classifier can tell apart.
DEVICES = {
    "fridge": ("a", 125.0, 0.75, 3.0),
    "heater": ("ab", 4500.0, 0.0, 0.0),
    "microwave": ("b", 1250.0, 0.33, 0.0),
    "pump": ("ab", 1000.0, 0.75, 2.0),
}


def make_event(device: str, minute: float, on: bool = True, jitter: float = 0.0) -> Event:
    legs, p, q, inrush = DEVICES[device]
    p = (p * (1.0 + jitter)) * (1 if on else -1)
    ts = T0 + timedelta(minutes=minute)
    us = int(ts.timestamp()) * 1_000_000
    return Event(
        event_id_for("h", us, legs),
        "h",
        ts,
        legs,
        p,
        q * p,
        abs(p) * (1 + q * q) ** 0.5 * (1 if on else -1),
        p / 120.0,
        0.0,
        100.0,
        100.0 + p,
        p if legs != "b" else 0.0,
        p if legs == "b" else 0.0,
        240.0 if legs == "ab" else 120.0,
        inrush_peak_w=inrush * abs(p) if on else 0.0,
    )


def events_row(rows: list[TableRow], event: Event | None = None) -> dict:
    """The last events row, or the last one of `event` (a label's rows also carry the events
    that the updated model answers again)."""
    return next(
        r
        for t, r in reversed(rows)
        if t == "events" and (event is None or r["event_id"] == event.event_id)
    )


def stream(learner: HomeLearner, n: int, start: float = 0.0) -> list[Event]:
    """n cycles of every device (on then off), with a little spread between cycles."""
    out = []
    for i in range(n):
        for k, device in enumerate(["fridge", "heater", "microwave"]):
            jitter = 0.01 * ((i * 7 + k) % 5 - 2)
            on = make_event(device, start + 60 * i + 10 * k, True, jitter)
            off = make_event(device, start + 60 * i + 10 * k + 5, False, jitter)
            learner.on_event(on)
            learner.on_event(off)
            out += [on, off]
    return out


def label(learner: HomeLearner, label_id: int, event: Event, device: str) -> list[TableRow]:
    return learner.on_label(Label(label_id, "h", event.event_id, device, T0))


def trained() -> tuple[HomeLearner, list[Event]]:
    learner = HomeLearner("h", seed=3)
    events = stream(learner, 4)
    for lid, e in enumerate(events, start=1):
        device = next(d for d in DEVICES if abs(abs(e.delta_p_w) / DEVICES[d][1] - 1) < 0.05)
        label(learner, lid, e, device)
    return learner, events


def test_a_label_changes_the_prediction_of_the_next_event_of_that_device() -> None:
    learner = HomeLearner("h", seed=0)
    first = make_event("heater", 0)
    assert events_row(learner.on_event(first))["device"] is None
    rows = label(learner, 1, first, "heater")
    # The confirmed event is emitted again, upserted as confirmed.
    assert events_row(rows)["event_id"] == first.event_id
    assert events_row(rows)["device"] == "heater" and events_row(rows)["labelled"] is True
    nxt = events_row(learner.on_event(make_event("heater", 30, jitter=0.01)))
    assert nxt["device"] == "heater" and nxt["labelled"] is False
    assert 0.0 <= nxt["uncertainty"] <= 1.0


def test_devices_are_told_apart_after_a_few_labels_each() -> None:
    learner, _ = trained()
    for device in ["fridge", "heater", "microwave"]:
        row = events_row(learner.on_event(make_event(device, 1000 + len(device), jitter=0.015)))
        assert row["device"] == device, (device, row)
        assert row["novelty"] < 0.5


def test_restart_from_a_snapshot_does_not_learn_a_label_twice() -> None:
    learner = HomeLearner("h", seed=0)
    events = stream(learner, 2)
    assert label(learner, 1, events[0], "fridge")
    restored: HomeLearner = pickle.loads(pickle.dumps(learner))
    before = restored.classifier.n_labels
    # At-least-once delivery replays label 1 after the restart: nothing is learned or emitted.
    assert label(restored, 1, events[0], "fridge") == []
    assert restored.classifier.n_labels == before == 1
    # A new label is learned once.
    assert events_row(label(restored, 2, events[2], "heater"), events[2])["device"] == "heater"
    assert restored.classifier.n_labels == 2
    probe = make_event("heater", 999, jitter=0.01)
    assert events_row(restored.on_event(probe))["device"] == "heater"


def test_a_replayed_event_is_answered_as_before_and_not_counted_again() -> None:
    learner = HomeLearner("h", seed=0)
    e = make_event("fridge", 0)
    first = events_row(learner.on_event(e))
    n = learner.n_events
    again = learner.on_event(e)
    assert again == [("events", first)] and learner.n_events == n


def test_a_label_for_an_unknown_event_is_skipped_with_a_warning(caplog) -> None:
    learner = HomeLearner("h", seed=0)
    assert learner.on_label(Label(1, "h", "no-such-event", "fridge", T0)) == []
    assert "not learned" in caplog.text
    assert learner.classifier.n_labels == 0


def test_an_unlabelled_device_is_novel_and_grouped_into_one_cluster() -> None:
    learner, _ = trained()
    rows = []
    for i in range(6):
        rows += learner.on_event(make_event("pump", 2000 + 30 * i, True, 0.01 * (i % 3)))
    pump_rows = [r for t, r in rows if t == "events"]
    assert all(r["device"] is None and r["novelty"] >= 0.5 for r in pump_rows)
    clusters = {r["cluster_id"] for r in pump_rows}
    assert len(clusters) == 1 and None not in clusters
    cluster_rows = [r for t, r in rows if t == "clusters"]
    assert cluster_rows[-1]["n_events"] == 6
    assert 950 <= cluster_rows[-1]["typical_delta_p_w"] <= 1050
    # Naming the cluster labels its events; the next pump event is recognised.
    (cid,) = clusters
    named = learner.on_label(Label(99, "h", CLUSTER_LABEL_PREFIX + cid, "well pump", T0))
    relabelled = [r for t, r in named if t == "events" and r["cluster_id"] == cid]
    assert len(relabelled) == 6 and all(r["device"] == "well pump" for r in relabelled)
    assert all(r["labelled"] for r in relabelled)
    assert [r["name"] for t, r in named if t == "clusters"] == ["well pump"]
    assert events_row(learner.on_event(make_event("pump", 3000)))["device"] == "well pump"


def test_the_same_stream_gives_the_same_rows() -> None:
    def rows() -> list:
        learner = HomeLearner("h", seed=5)
        out = []
        events = stream(learner, 3)
        for i, e in enumerate(events[:6]):
            out += label(learner, i + 1, e, f"d{abs(round(e.delta_p_w)) // 100}")
        for i in range(10):
            out += learner.on_event(make_event("microwave", 5000 + i, jitter=0.001 * i))
        return out

    assert rows() == rows()


def test_on_and_off_pair_into_an_activation_with_energy() -> None:
    learner = HomeLearner("h", seed=0)
    rows = learner.on_event(make_event("heater", 0))
    rows += learner.on_event(make_event("heater", 30, on=False, jitter=-0.03))
    acts = [r for t, r in rows if t == "activations"]
    assert acts[0]["end_ts"] is None
    closed = acts[-1]
    assert closed["activation_id"] == acts[0]["activation_id"]
    assert closed["duration_s"] == 1800.0
    # 30 min at the mean of 4500 W on and 4365 W off.
    assert abs(closed["energy_wh"] - 0.5 * (4500 + 4365) / 2) < 1e-6


def test_the_queue_puts_the_most_uncertain_first() -> None:
    learner, _ = trained()
    learner.on_event(make_event("pump", 4000))
    learner.on_event(make_event("fridge", 4001, jitter=0.01))
    queue = learner.uncertainty_queue()
    assert queue[0][0] == make_event("pump", 4000).event_id
    assert [u for _, u in queue] == sorted((u for _, u in queue), reverse=True)


def _unlabelled_history(learner: HomeLearner, cycles: int) -> list[Event]:
    """Fridge and heater cycles that no label explains yet (the first label comes after)."""
    out = []
    for i in range(cycles):
        for k, device in enumerate(["fridge", "heater"]):
            jitter = 0.01 * ((i * 3 + k) % 5 - 2)
            out.append(make_event(device, 60 * i + 20 * k, True, jitter))
            out.append(make_event(device, 60 * i + 20 * k + 7, False, jitter))
    for e in out:
        learner.on_event(e)
    return out


def test_a_label_re_predicts_the_history_newest_first_in_bounded_steps() -> None:
    learner = HomeLearner("h", seed=0, repredict_per_step=6)
    history = _unlabelled_history(learner, 8)
    rows = label(learner, 1, history[0], "fridge")
    second = label(learner, 2, history[2], "heater")
    rows += second
    # The second label's step answers the 6 newest events again (and the off events of the runs
    # they start, which may now take their device), newest first; nothing older.
    ids = [r["event_id"] for t, r in second if t == "events" and not r["labelled"]]
    newest = [e.event_id for e in reversed(history)][:6]
    offs_of_newest = {
        history[i + 1].event_id
        for i in range(len(history) - 1)
        if history[i].event_id in newest and history[i].delta_p_w > 0
    }
    assert ids and ids[0] == newest[0]
    assert set(ids) <= set(newest) | offs_of_newest
    assert len(learner.stale) == len(history) - 2 - 6
    # The rest comes with the next events, a step at a time, until the whole history is answered.
    for i in range(6):
        rows += learner.on_event(make_event("fridge", 5000 + 60 * i, True, 0.005))
    final = {r["event_id"]: r for t, r in rows if t == "events"}
    truth = {e.event_id: ("fridge" if abs(e.delta_p_w) < 200 else "heater") for e in history}
    assert {k: final[k]["device"] for k in truth} == truth
    assert all(0.0 < final[k]["confidence"] <= 1.0 for k in truth)
    # Activations follow their events: each run of the history now has its device.
    runs = {r["activation_id"]: r for t, r in rows if t == "activations"}
    on_ids = [e.event_id for e in history if e.delta_p_w > 0]
    assert {runs[k]["device"] for k in on_ids} == {"fridge", "heater"}
    assert all(runs[k]["device"] == truth[k] for k in on_ids)
    assert learner.stale == []


def test_re_prediction_never_overwrites_a_confirmed_event() -> None:
    learner = HomeLearner("h", seed=0)
    history = _unlabelled_history(learner, 4)
    # The user calls a heater event "boiler" and a fridge "fridge": a later pass keeps both.
    label(learner, 1, history[2], "boiler")
    rows = label(learner, 2, history[0], "fridge")
    rows += label(learner, 3, history[4], "fridge")
    mine = [r for t, r in rows if t == "events" and r["event_id"] == history[2].event_id]
    assert all(r["device"] == "boiler" and r["labelled"] for r in mine)


def test_a_named_cluster_gives_its_device_to_its_events_and_its_runs() -> None:
    learner, _ = trained()
    rows = []
    for i in range(4):
        rows += learner.on_event(make_event("pump", 2000 + 30 * i, True, 0.01 * (i % 3)))
        rows += learner.on_event(make_event("pump", 2010 + 30 * i, False, 0.01 * (i % 3)))
    (cid,) = {r["cluster_id"] for t, r in rows if t == "events" and r["cluster_id"]}
    named = learner.on_label(Label(99, "h", CLUSTER_LABEL_PREFIX + cid, "well pump", T0))
    runs = [r for t, r in named if t == "activations"]
    assert len(runs) == 4 and all(r["device"] == "well pump" for r in runs)
    assert all(r["energy_wh"] > 0 for r in runs)


def test_a_correction_replaces_the_old_label_in_the_calibration_and_novelty_memories() -> None:
    learner = HomeLearner("h", seed=0)
    history = _unlabelled_history(learner, 3)
    label(learner, 1, history[0], "freezer")
    label(learner, 2, history[2], "heater")
    assert learner.novelty.labelled["freezer"].shape[0] == 1
    rows = label(learner, 3, history[0], "fridge")
    assert events_row(rows, history[0])["device"] == "fridge"
    assert "freezer" not in learner.novelty.labelled
    assert "freezer" not in learner.calibration.devices
    probe = make_event("fridge", 9000, jitter=0.01)
    assert events_row(learner.on_event(probe), probe)["device"] == "fridge"
