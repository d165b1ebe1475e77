"""The Events page: every event with its predicted or confirmed device; a click zooms the Live
chart to it.

The table's data is swapped in place when the events change (Tabulator keeps its one model).
An event the flow revised or removed since the last refresh simply shows its new row or is
gone: the page keeps nothing of its own about an event.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import panel as pn

from dashboards.store import DataStore
from dashboards.widgets import (
    NUMBER_FORMATTERS,
    UNKNOWN,
    DevicePalette,
    Selection,
    as_text_times,
    blanks,
    device_html,
    mark_provisional,
    percent,
)

__all__ = ["EventLog"]

log = logging.getLogger(__name__)

_EVENT_TABLE_COLUMNS = {
    "ts": "time (UTC)",
    "legs": "legs",
    "delta_p_w": "ΔP (W)",
    "device_html": "device",
    "confidence": "confidence",
    "novelty": "novelty",
    "confirmed": "confirmed",
    "shown_device": "device name",
    "event_id": "event",
}


def _event_table_frame(events: pd.DataFrame, palette: DevicePalette) -> pd.DataFrame:
    if events.empty:
        return pd.DataFrame({c: [] for c in _EVENT_TABLE_COLUMNS})
    frame = events.copy()
    frame.loc[frame["shown_device"].isna(), "confidence"] = np.nan  # no device, no confidence
    frame["shown_device"] = frame["shown_device"].fillna(UNKNOWN)
    frame["device_html"] = mark_provisional(
        device_html(palette, frame["shown_device"]), frame["provisional"]
    )
    frame["confirmed"] = frame["confirmed_device"].notna() | frame["labelled"].fillna(False)
    frame["confirmed"] = frame["confirmed"].map({True: "✓ by you", False: ""})
    frame = percent(as_text_times(frame, "ts"), "confidence")
    frame = blanks(frame, "confidence", "novelty")
    return frame[list(_EVENT_TABLE_COLUMNS)].reset_index(drop=True)


class EventLog(pn.viewable.Viewer):
    """Every event with its predicted or confirmed device; click a row to zoom the chart to it."""

    def __init__(
        self,
        store: DataStore,
        selection: Selection | None = None,
        palette: DevicePalette | None = None,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.store = store
        self.selection = selection or Selection()
        self.palette = palette or DevicePalette(store.device_names())
        self.device = pn.widgets.Select(label="Device", options=self._device_options(), width=200)
        self.legs = pn.widgets.Select(
            label="Legs", options={"all": "", "a": "a", "b": "b", "a and b (240 V)": "ab"},
            width=150,
        )  # fmt: skip
        self.direction = pn.widgets.Select(
            label="Direction", options=["on and off", "on", "off"], width=130
        )
        self.min_dp = pn.widgets.IntSlider(
            label="|ΔP| at least (W)", start=0, end=3000, step=50, value=0, width=220
        )
        self.count = pn.pane.HTML("")
        self.table = pn.widgets.Tabulator(
            _event_table_frame(pd.DataFrame(), self.palette),
            titles=_EVENT_TABLE_COLUMNS,
            formatters=NUMBER_FORMATTERS,
            hidden_columns=["event_id", "shown_device"],
            layout="fit_data_stretch",
            pagination="local",
            page_size=15,
            disabled=True,
            selectable=False,
            show_index=False,
            sizing_mode="stretch_width",
            header_filters=False,
        )  # fmt: skip
        self.table.on_click(self._clicked)
        for w in (self.device, self.legs, self.direction, self.min_dp):
            w.param.watch(lambda e: self.refresh(), "value")
        self.refresh()

    def _device_options(self) -> list[str]:
        return ["all devices", UNKNOWN, *self.store.device_names()]

    def _frame(self) -> pd.DataFrame:
        device = None if self.device.value == "all devices" else self.device.value
        events = self.store.events(
            device=device, legs=self.legs.value or None, min_abs_delta_w=self.min_dp.value,
            limit=2000,
        )  # fmt: skip
        if self.direction.value == "on":
            events = events[events["delta_p_w"] > 0]
        elif self.direction.value == "off":
            events = events[events["delta_p_w"] <= 0]
        return _event_table_frame(events, self.palette)

    def refresh(self) -> None:
        frame = self._frame()
        if not frame.equals(self.table.value):
            self.table.value = frame
        options = self._device_options()
        if options != self.device.options:
            self.device.options = options
        self.count.object = (
            f"{len(frame):,} events (newest first; click one to see it on the chart)"
            if len(frame)
            else "No events match yet: they appear as the flow finds switches in the readings."
        )

    def _clicked(self, event: Any) -> None:
        if event.row is None or event.row >= len(self.table.value):
            return
        event_id = str(self.table.value.iloc[event.row]["event_id"])
        self.selection.event_id = None  # so choosing the same event again zooms again
        self.selection.event_id = event_id
        self.selection.page = "Live"

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(self.device, self.legs, self.direction, self.min_dp),
            self.count,
            self.table,
            sizing_mode="stretch_width",
            name="Events",
        )
