"""The simulated user labels a held-out device once it has been around; novelty counts only its
events before that first label."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nilm.evaluation import Evaluation, roc_auc
from nilm.records import Event, TruthEvent

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _event(n: int, ts: datetime, delta_p_w: float, legs: str = "a") -> Event:
    return Event(
        event_id=f"e{n}", home_id="h", ts=ts, legs=legs, delta_p_w=delta_p_w,
        delta_q_var=0.05 * delta_p_w, delta_s_va=abs(delta_p_w), delta_current_a=delta_p_w / 120,
        delta_pf=0.0, p_before_w=100.0, p_after_w=100.0 + delta_p_w,
        delta_p_a_w=delta_p_w if legs == "a" else 0.0,
        delta_p_b_w=delta_p_w if legs == "b" else 0.0, voltage_v=120.0,
    )  # fmt: skip


def _household() -> tuple[list[TruthEvent], list[Event]]:
    """A kettle on leg a every hour for 12 h; a fan on leg b from hour 6 on, every 20 min."""
    truth: list[TruthEvent] = []
    events: list[Event] = []
    runs = [("kettle", "a", 1500.0, T0 + timedelta(hours=h), 180) for h in range(12)]
    runs += [("fan", "b", 90.0, T0 + timedelta(hours=6, minutes=20 * k), 300) for k in range(18)]
    for device, leg, watts, start, length_s in runs:
        end = start + timedelta(seconds=length_s)
        truth.append(TruthEvent(start, device, leg, "on", watts))
        truth.append(TruthEvent(end, device, leg, "off", -watts))
    truth.sort(key=lambda t: t.ts)
    for n, t in enumerate(truth):
        events.append(_event(n, t.ts, t.delta_p_w, t.legs))
    return truth, events


def _run(label_holdout_after: int | None) -> tuple[Evaluation, dict[str, object]]:
    truth, events = _household()
    ev = Evaluation(
        truth, label_budget=3, holdout=["fan"], review_every_s=1800.0,
        label_holdout_after=label_holdout_after,
    )  # fmt: skip
    for event in events:
        ev.feed_event(event)
    return ev, ev.result()


def test_a_held_out_device_is_never_labelled_by_default() -> None:
    ev, result = _run(None)
    assert result["labels"] == {"kettle": 3}
    fan = [s for s in ev.scored if s.truth_device == "fan"]
    assert result["novelty"]["label_holdout_after"] is None
    assert "fan" not in result["classification"]["per_device"]
    assert len(fan) == 36


def test_a_held_out_device_is_labelled_once_seen_often_enough() -> None:
    ev, result = _run(10)
    assert result["labels"] == {"fan": 3, "kettle": 3}
    first = ev.user.first_label["fan"]
    fan = [s for s in ev.scored if s.truth_device == "fan"]
    # not before ten of its events were seen
    assert first > fan[9].event.ts
    assert sum(1 for s in fan if s.event.ts < first) >= 10
    # its events before the label are the novel ones; after it, it is a known device
    novel = [s.novelty for s in fan if s.event.ts < first]
    known = [
        s for s in ev.scored
        if s.truth_device and s.event.ts > ev.user.first_label[s.truth_device]
    ]  # fmt: skip
    assert any(s.truth_device == "fan" for s in known) and len(novel) < len(fan)
    assert result["novelty"]["roc_auc"] == roc_auc(novel, [s.novelty for s in known])
    flagged = [s.device is None and s.novelty >= 0.5 for s in known]
    assert result["novelty"]["known_flagged_rate"] == round(sum(flagged) / len(flagged), 4)
    # and its unlabelled events after the label are scored like any device's
    assert "fan" in result["classification"]["per_device"]
    after_label = {"kettle": T0, "fan": first}
    n_scored = sum(
        1 for s in ev.scored
        if s.truth_device and not s.labelled and s.event.ts >= after_label[s.truth_device]
    )  # fmt: skip
    assert result["classification"]["n_scored"] == n_scored


def test_the_user_takes_an_event_for_a_true_switch_on_its_own_legs_only() -> None:
    """A freezer's small on (leg a, under the 50 W the user labels) in the second a vacuum
    starts on leg b: the leg-a event is no vacuum's, the leg-b one is."""
    t = T0 + timedelta(hours=1)
    truth = [
        TruthEvent(T0, "kettle", "a", "on", 1500.0),
        TruthEvent(t, "freezer", "a", "on", 40.0),
        TruthEvent(t, "vacuum", "b", "on", 1100.0),
    ]
    ev = Evaluation(truth, label_budget=3)
    for event in (_event(0, T0, 1500.0), _event(1, t, 51.0, "a"), _event(2, t, 1100.0, "b")):
        ev.feed_event(event)
    assert [s.truth_device for s in ev.scored] == ["kettle", None, "vacuum"]
