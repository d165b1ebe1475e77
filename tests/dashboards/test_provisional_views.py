"""Provisional events on the pages: rows the flow's own detector, learner and sink wrote after
the flow's database, shown as provisional until the final row replaces them."""

from __future__ import annotations

import numpy as np

from dashboards.events import EventLog
from dashboards.label import LabellingQueue
from dashboards.live import LivePowerView
from dashboards.store import DataStore
from dashboards.widgets import PROVISIONAL_BADGE, DevicePalette, Selection
from flows.sink import write_items
from nilm.detection import HomeEventDetector
from nilm.learning import HomeLearner
from nilm.provisional import SETTLE_TABLE, Settlement
from nilm.records import READING_COLUMNS, Event, ReadingBatch


def _continuation(store: DataStore, seconds: int, step_at: int, step_w: float) -> ReadingBatch:
    """`seconds` readings after the database's last, at its level, leg a `step_w` higher from
    `step_at` on (1 W of noise)."""
    cur = store.connection.cursor()
    cols = ", ".join(READING_COLUMNS)
    last = cur.execute(
        f"SELECT epoch_us(ts), seq, {cols} FROM readings ORDER BY ts DESC LIMIT 1"
    ).fetchone()
    assert last is not None
    ts0, seq0 = int(last[0]), int(last[1])
    values = dict(zip(READING_COLUMNS, last[2:], strict=True))
    rng = np.random.default_rng(3)
    columns = {c: np.full(seconds, float(values[c] or 0.0)) for c in READING_COLUMNS}
    bump = np.where(np.arange(seconds) >= step_at, step_w, 0.0) + rng.normal(0, 1.0, seconds)
    columns["a_act_power"] = columns["a_act_power"] + bump
    columns["a_aprt_power"] = columns["a_aprt_power"] + bump
    n = np.arange(1, seconds + 1, dtype=np.int64)
    return ReadingBatch("home", seq0 + n, ts0 + n * 1_000_000, columns)


def _write(store: DataStore, learner: HomeLearner, batch: ReadingBatch,
           items: list[Event | Settlement]) -> None:  # fmt: skip
    """What the flow's sink receives for a batch: its readings, then the learner's rows."""
    rows: list[tuple[str, object]] = [("readings", batch)]
    for item in items:
        if isinstance(item, Settlement):
            rows.append((SETTLE_TABLE, item.row()))
        else:
            rows += learner.on_event(item)
    write_items(store.connection.cursor(), rows)  # type: ignore[arg-type]
    store.invalidate()


def test_a_provisional_event_is_marked_on_every_page_until_it_settles(
    fresh_store: DataStore,
) -> None:
    store = fresh_store
    det = HomeEventDetector("home", provisional=True)
    learner = HomeLearner("home")
    batch = _continuation(store, 126, step_at=120, step_w=800.0)
    items = det.update_live(batch)
    (shown,) = [e for e in items if isinstance(e, Event) and e.provisional]
    _write(store, learner, batch, items)

    palette = DevicePalette(store.device_names())
    log = EventLog(store, Selection(), palette)
    table = log.table.value.set_index("event_id")
    assert PROVISIONAL_BADGE in table.loc[shown.event_id, "device_html"]
    others = table.drop(index=shown.event_id)["device_html"]
    assert len(others) and not others.str.contains("provisional").any()

    queue = LabellingQueue(store, palette=palette)
    frame = queue._queue_frame().set_index("event_id")
    assert shown.event_id in frame.index
    assert PROVISIONAL_BADGE in frame.loc[shown.event_id, "device_html"]

    live = LivePowerView(store, palette, Selection(), window="15 min")
    marker = live.data["on"].set_index("event_id").loc[shown.event_id]
    assert marker["fill_alpha"] == 0.0 and marker["line_color"] == marker["color"]  # hollow
    assert marker["status"] == "provisional"
    source_ids = list(live.marker_sources["on"].data["event_id"])
    assert shown.event_id in source_ids

    # the flow goes on: the step is final under the same id, and the marker is filled
    more = _continuation(store, 60, step_at=0, step_w=800.0)
    finals = det.update_live(more)
    _write(store, learner, more, finals)
    (final,) = [e for e in finals if isinstance(e, Event) and e.event_id == shown.event_id]
    assert not final.provisional
    live.refresh()
    marker = live.data["on"].set_index("event_id").loc[final.event_id]
    assert marker["fill_alpha"] == 1.0 and marker["status"] == ""
    log.refresh()
    assert (
        "provisional"
        not in log.table.value.set_index("event_id").loc[final.event_id, "device_html"]
    )
