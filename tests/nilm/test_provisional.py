"""Provisional events: shown a couple of samples after the step, refined under the same id,
retracted when they stand no more, and never a trace in the final events or the models."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from nilm.detection import HomeEventDetector
from nilm.learning import HomeLearner
from nilm.provisional import Settlement
from nilm.records import READING_COLUMNS, Event, Label, ReadingBatch, from_epoch_us
from nilm.simulator import HouseholdSimulator, SimulatorConfig

T0_US = 1_767_600_000_000_000  # 2026-01-05 08:00 UTC


def readings(a_w: list[float], b_w: list[float] | None = None, seed: int = 0) -> ReadingBatch:
    """1 Hz readings with these active powers (plus 1 W of noise), pf 0.9, 120 V."""
    n = len(a_w)
    rng = np.random.default_rng(seed)
    cols = {c: np.full(n, 120.0) for c in READING_COLUMNS}
    for leg, watts in (("a", a_w), ("b", b_w if b_w is not None else [80.0] * n)):
        p = np.asarray(watts, dtype=np.float64) + rng.normal(0, 1.0, n)
        cols[f"{leg}_act_power"] = p
        cols[f"{leg}_aprt_power"] = p / 0.9
        cols[f"{leg}_pf"] = np.full(n, 0.9)
        cols[f"{leg}_current"] = p / 0.9 / 120.0
        cols[f"{leg}_freq"] = np.full(n, 60.0)
    ts = T0_US + np.arange(n, dtype=np.int64) * 1_000_000 + 250_000
    return ReadingBatch("h", np.arange(n, dtype=np.int64), ts, cols)


class Table:
    """What the sink keeps of the events rows, by the same rules (see flows.sink)."""

    def __init__(self) -> None:
        self.rows: dict[str, Event] = {}

    def apply(self, item: Event | Settlement) -> None:
        if isinstance(item, Event):
            old = self.rows.get(item.event_id)
            if old is None or old.provisional or not item.provisional:
                self.rows[item.event_id] = item
            return
        for event_id in item.retracted:
            if event_id in self.rows and self.rows[event_id].provisional:
                del self.rows[event_id]
        for event_id, e in list(self.rows.items()):
            void = item.everything or (
                item.settled_before is not None and e.ts < item.settled_before
            )
            if e.provisional and void:
                del self.rows[event_id]


def sample_by_sample(batch: ReadingBatch, size: int = 1) -> list[tuple[int, Event | Settlement]]:
    """(samples seen, item) for everything the detector says, fed `size` samples at a time."""
    det = HomeEventDetector("h", provisional=True)
    out: list[tuple[int, Event | Settlement]] = []
    for lo in range(0, len(batch), size):
        out += [(min(lo + size, len(batch)), x) for x in det.update_live(batch[lo : lo + size])]
    out += [(len(batch), x) for x in det.flush_live()]
    return out


def events_of(items: list[tuple[int, Event | Settlement]]) -> list[tuple[int, Event]]:
    return [(n, x) for n, x in items if isinstance(x, Event)]


def finals_of(items: list[tuple[int, Event | Settlement]]) -> list[Event]:
    return [x for _, x in events_of(items) if not x.provisional]


def test_an_inrush_is_shown_within_three_samples_and_refined_under_the_same_id() -> None:
    step = 60
    batch = readings([100.0] * step + [1300.0, 700.0] + [400.0] * 58)
    items = sample_by_sample(batch)
    shown = [(n, e) for n, e in events_of(items) if e.provisional]
    (final,) = finals_of(items)
    assert final.delta_p_w == pytest.approx(300.0, abs=15.0)
    first_n, first = shown[0]
    assert first_n - step <= 3  # the inrush, the decay, the new level
    assert {e.event_id for _, e in shown} == {final.event_id}
    # written again as the inrush decays, ending near the final step
    assert len(shown) >= 2 and first.delta_p_w > 400.0
    assert shown[-1][1].delta_p_w == pytest.approx(final.delta_p_w, abs=30.0)
    table = Table()
    for _, x in items:
        table.apply(x)
    assert list(table.rows.values()) == [final]


def test_a_ramp_that_goes_on_is_refined_under_the_same_id() -> None:
    # a soft start: a first climb, a hold, a second climb, as an EV charger does
    levels = [200.0] * 60 + [900.0, 1500.0] + [1500.0] * 5 + [2300.0, 3000.0] + [3000.0] * 50
    items = sample_by_sample(readings(levels))
    shown = [e for _, e in events_of(items) if e.provisional]
    (final,) = finals_of(items)
    assert final.delta_p_w == pytest.approx(2800.0, rel=0.05)
    assert {e.event_id for e in shown} == {final.event_id}
    assert shown[0].delta_p_w < 2000.0 < shown[-1].delta_p_w


def test_a_transient_that_is_no_event_is_retracted() -> None:
    # two seconds and back (the segmenter takes three or more seconds at a level for two switches)
    batch = readings([100.0] * 60 + [400.0] * 2 + [100.0] * 60)
    items = sample_by_sample(batch)
    shown = [(n, e) for n, e in events_of(items) if e.provisional]
    assert shown and not finals_of(items)
    shown_id = shown[0][1].event_id
    retracted = [n for n, x in items if isinstance(x, Settlement) and shown_id in x.retracted]
    assert retracted and retracted[0] <= 60 + 2 + 2  # gone as soon as the power is back
    table = Table()
    for _, x in items:
        table.apply(x)
    assert table.rows == {}


def test_a_second_leg_that_joins_changes_the_id_and_leaves_no_orphan() -> None:
    """A 240 V load whose leg b is a second late: first shown as 'a', then as 'ab'."""
    a = [100.0] * 60 + [1600.0] * 60
    b = [80.0] * 61 + [1580.0] * 59
    items = sample_by_sample(readings(a, b))
    shown = [e for _, e in events_of(items) if e.provisional]
    (final,) = finals_of(items)
    assert final.legs == "ab"
    assert [e.legs for e in shown][:1] == ["a"] and shown[-1].legs == "ab"
    withdrawn = {i for _, x in items if isinstance(x, Settlement) for i in x.retracted}
    assert shown[0].event_id in withdrawn
    table = Table()
    for _, x in items:
        table.apply(x)
    assert list(table.rows.values()) == [final]


@pytest.mark.parametrize("size", [1, 3, 17])
def test_final_events_are_the_same_with_provisional_ones_on(size: int) -> None:
    day, _truth = HouseholdSimulator(SimulatorConfig(seed=5, home_id="h")).day(0)
    start = int(day.ts_us[0]) + 20 * 3_600_000_000
    hour = day[(day.ts_us >= start) & (day.ts_us < start + 3_600_000_000)]
    plain = HomeEventDetector("h")
    expected = plain.update(hour) + plain.flush()
    items = sample_by_sample(hour, size)
    assert finals_of(items) == expected and len(expected) >= 4
    # and what a sink keeps in the end is exactly the final events
    table = Table()
    for _, x in items:
        table.apply(x)
    assert sorted(table.rows) == sorted(e.event_id for e in expected)


def test_the_detector_pickles_mid_step_and_goes_on_alike() -> None:
    batch = readings([100.0] * 60 + [600.0] * 60)
    det = HomeEventDetector("h", provisional=True)
    first = det.update_live(batch[:62])
    assert any(isinstance(x, Event) and x.provisional for x in first)
    copy = pickle.loads(pickle.dumps(det))
    assert copy.update_live(batch[62:]) == det.update_live(batch[62:])
    assert copy.flush_live() == det.flush_live()


def _events(n: int) -> list[Event]:
    t0 = datetime(2026, 1, 5, 8, tzinfo=UTC)
    out = []
    for i in range(n):
        dp = 500.0 if i % 2 == 0 else -495.0
        ts = t0.replace(minute=i)
        steps = (0.3 * dp, dp, dp / 120, 0.0, 100.0, 100.0 + dp, dp, 0.0, 120.0)
        out.append(Event(f"e{i}", "h", ts, "a", dp, *steps))
    return out


def test_the_learner_only_predicts_for_provisional_events() -> None:
    """A learner that also saw provisional versions answers the final events exactly as one
    that never did: nothing was learned, paired, clustered or counted from them."""
    finals = _events(12)
    plain, shown = HomeLearner("h", seed=0), HomeLearner("h", seed=0)
    plain_rows, shown_rows = [], []
    for e in finals:
        early = replace(e, provisional=True, delta_p_w=e.delta_p_w * 1.4)
        (row,) = shown.on_event(early)
        assert row[0] == "events" and row[1]["provisional"] and row[1]["cluster_id"] is None
        plain_rows += plain.on_event(e)
        shown_rows += shown.on_event(e)
    assert shown_rows == plain_rows
    assert shown.n_events == plain.n_events == len(finals)


def test_a_label_on_a_provisional_event_is_learned_once_when_it_is_final() -> None:
    learner = HomeLearner("h", seed=0)
    event = _events(1)[0]
    learner.on_event(replace(event, provisional=True))
    assert learner.on_label(Label(1, "h", event.event_id, "heater", event.ts)) == []
    rows = learner.on_event(event)
    labelled = [r for t, r in rows if t == "events" and r["labelled"]]
    assert labelled and labelled[-1]["device"] == "heater" and not labelled[-1]["provisional"]
    # the same final event again (at-least-once) does not learn it twice
    assert [r["device"] for t, r in learner.on_event(event) if t == "events"] == ["heater"]


def test_a_learner_snapshot_from_before_provisional_events_still_loads() -> None:
    learner = HomeLearner("h", seed=0)
    learner.on_event(_events(1)[0])
    state = dict(learner.__dict__)
    del state["provisional_ids"], state["parked_labels"]
    old = HomeLearner.__new__(HomeLearner)
    old.__setstate__(state)
    restored = pickle.loads(pickle.dumps(old))
    assert restored.on_event(_events(2)[1])[-1][1]["event_id"] == "e1"


def _ids_shown(items: list[tuple[int, Event | Settlement]]) -> list[str]:
    """The provisional ids in the order they were first written."""
    ids: list[str] = []
    for _, e in events_of(items):
        if e.provisional and e.event_id not in ids:
            ids.append(e.event_id)
    return ids


@pytest.mark.parametrize("ramp_s", [8, 15])
def test_a_slow_linear_ramp_keeps_one_provisional_id(ramp_s: int) -> None:
    """A ramp of 120 W/s or slower: before, each second of it was a new provisional id."""
    climb = list(np.linspace(200.0, 2000.0, ramp_s + 1)[1:])
    items = sample_by_sample(readings([200.0] * 60 + climb + [2000.0] * 60))
    (final,) = finals_of(items)
    assert final.delta_p_w == pytest.approx(1800.0, rel=0.03)
    assert _ids_shown(items) == [final.event_id]
    withdrawn = [i for _, x in items if isinstance(x, Settlement) for i in x.retracted]
    assert withdrawn == []
    growing = [e.delta_p_w for _, e in events_of(items) if e.provisional]
    assert growing[0] < 900.0 < growing[-1]  # written again as it climbs


def test_two_loads_a_few_seconds_apart_stay_two_provisional_events() -> None:
    """The ramp rule joins steps only while the power keeps moving: two steady steps 8 s apart
    are two switches, before and after the segmenter has spoken."""
    levels = [200.0] * 60 + [700.0] * 8 + [1200.0] * 60
    items = sample_by_sample(readings(levels))
    finals = finals_of(items)
    assert len(finals) == 2
    assert _ids_shown(items) == [f.event_id for f in finals]


REAL = sorted(
    (Path(__file__).resolve().parents[2].parent / "shared" / "data").glob(
        "shelly_pro3em_2025-12-12_0*.parquet"
    )
)


@pytest.mark.skipif(not REAL, reason="real Shelly recording not found in ../shared/data")
def test_a_real_slow_ramp_keeps_one_provisional_id() -> None:
    """08:03:29 on leg b of the real recording: a load falls 110 W over 11 s (273, 260, 247, ...,
    163 W). Before, it was shown as four ids in turn (03:33, 03:34, 03:36, then 03:29)."""
    import pyarrow.parquet as pq

    from nilm.parsing import parse_logger_rows

    rows: list[dict[str, object]] = []
    for path in REAL:
        rows += pq.read_table(path).to_pylist()
    real, _ = parse_logger_rows(rows, "real", "shelly")
    step_us = int(datetime(2025, 12, 12, 8, 3, 29, tzinfo=UTC).timestamp() * 1e6)
    window = real[(real.ts_us >= step_us - 120_000_000) & (real.ts_us < step_us + 60_000_000)]
    det = HomeEventDetector("real", provisional=True)
    items = [(n, x) for n in range(len(window)) for x in det.update_live(window[n : n + 1])]
    (final,) = [e for e in finals_of(items) if e.ts == from_epoch_us(step_us)]
    assert final.legs == "b" and final.delta_p_w == pytest.approx(-110.0, abs=10.0)
    near = [
        e.event_id
        for _, e in events_of(items)
        if e.provisional and abs(e.ts.timestamp() * 1e6 - step_us) <= 20_000_000
    ]
    assert set(near) == {final.event_id}
    # and it was on screen within 5 s of the step's start, still climbing to its final size
    first_n = next(n for n, e in events_of(items) if e.event_id == final.event_id)
    assert (int(window.ts_us[first_n]) - step_us) / 1e6 <= 5.0
