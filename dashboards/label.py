"""The Label page: the events whose label would teach the models most, first; confirm,
correct or name each in one click.

Labelling is one event at a time unless the person asks for a whole unknown cluster.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, Span
from bokeh.plotting import figure

from dashboards.store import DataStore, RangeProblem
from dashboards.widgets import (
    LEG_COLORS,
    LEG_LABELS,
    NUMBER_FORMATTERS,
    UNKNOWN,
    DevicePalette,
    as_text_times,
    blanks,
    bokeh_edits,
    device_html,
    mark_provisional,
    message,
    naive,
    percent,
    say,
    set_data,
    time_axis_formatter,
    when,
)
from nilm.labelling import MAX_DEVICE_NAME_CHARS

__all__ = ["LabellingQueue"]

log = logging.getLogger(__name__)


_QUEUE_COLUMNS = {
    "ts": "time (UTC)",
    "delta_p_w": "ΔP (W)",
    "legs": "legs",
    "device_html": "predicted",
    "confidence": "confidence",
    "uncertainty": "uncertainty",
    "novelty": "novelty",
    "cluster_id": "cluster",
    "cluster_events": "its events",
    "device": "device",
    "event_id": "event",
}


class LabellingQueue(pn.viewable.Viewer):
    """Events the models are least sure of, first; confirm, correct or name each in one click.

    Every confirmation is a row in `labels`; the running flow learns it and rewrites its
    predictions, which the event log shows on its next refresh.
    """

    def __init__(
        self,
        store: DataStore,
        read_only: bool = False,
        palette: DevicePalette | None = None,
        on_label: Callable[[], None] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.store = store
        self.read_only = read_only
        self.palette = palette or DevicePalette(store.device_names())
        self.on_label = on_label
        self.table = pn.widgets.Tabulator(
            pd.DataFrame({c: [] for c in _QUEUE_COLUMNS}),
            titles=_QUEUE_COLUMNS,
            formatters=NUMBER_FORMATTERS,
            hidden_columns=["event_id", "device"],
            layout="fit_data_stretch",
            selectable=1,
            disabled=True,
            show_index=False,
            pagination="local",
            page_size=10,
            sizing_mode="stretch_width",
        )  # fmt: skip
        self.table.param.watch(lambda e: self._show_selected(), "selection")
        self.detail = pn.pane.HTML("", sizing_mode="stretch_width")
        self._build_snippet()
        self.confirm = pn.widgets.Button(label="✓ Confirm", color="success", disabled=True)
        self.pick = pn.widgets.Select(label="or pick another device", options=[], width=220)
        self.pick_button = pn.widgets.Button(label="Label as this device", color="primary")
        self.new_name = pn.widgets.TextInput(
            label="or name a new device", placeholder="e.g. kettle",
            max_length=MAX_DEVICE_NAME_CHARS * 4, width=220,
        )  # fmt: skip
        self.new_button = pn.widgets.Button(label="Name new device", color="primary")
        self.whole_cluster = pn.widgets.Checkbox(
            label="label every event of its unknown cluster", value=False, visible=False
        )
        # At the top and sticky: after a label the table reloads and the page may scroll,
        # and the outcome must stay in sight wherever the person is.
        self.message = message()
        self.message.styles = {"position": "sticky", "top": "0", "z-index": "10"}
        self.count = pn.pane.HTML("")
        self.reload_button = pn.widgets.Button(
            label="↻ Reload queue", color="light", visible=False, width=140
        )
        self.reload_button.on_click(lambda e: self.reload())
        self._pending: pd.DataFrame | None = None
        self.confirm.on_click(lambda e: self.label_selected(self._predicted()))
        self.pick_button.on_click(lambda e: self.label_selected(self.pick.value))
        self.new_button.on_click(lambda e: self.label_selected(self.new_name.value))
        if read_only:
            for w in (self.confirm, self.pick_button, self.new_button):
                w.disabled = True
            say(
                self.message,
                "This dashboard opened the database read-only, so it cannot store labels: "
                "use <code>nilm label EVENT_ID DEVICE --db DB</code>, or label in the dashboard "
                "of <code>nilm run</code> / <code>nilm demo</code>.",
                "warning",
            )
        self.reload()

    # -- state ----------------------------------------------------------------------------
    def selected(self) -> dict[str, Any] | None:
        """The queue row chosen (the first one when none is)."""
        frame = self.table.value
        if frame is None or frame.empty:
            return None
        index = self.table.selection[0] if self.table.selection else 0
        if index >= len(frame):
            return None
        row: dict[str, Any] = frame.iloc[index].to_dict()
        return row

    def _predicted(self) -> str | None:
        row = self.selected()
        device = None if row is None else row.get("device")
        return None if device is None or pd.isna(device) else str(device)

    def _queue_frame(self) -> pd.DataFrame:
        queue = self.store.labelling_queue(limit=100)
        if not len(queue):
            return pd.DataFrame({c: [] for c in _QUEUE_COLUMNS})
        queue = percent(as_text_times(queue, "ts"), "confidence")
        queue.loc[queue["device"].isna(), "confidence"] = np.nan  # no device, no confidence
        queue["device_html"] = mark_provisional(
            device_html(self.palette, queue["device"].fillna(UNKNOWN)), queue["provisional"]
        )
        queue = blanks(queue, "confidence", "uncertainty", "novelty")
        return queue[list(_QUEUE_COLUMNS)].reset_index(drop=True)

    def reload(self) -> None:
        """Load the queue afresh, keeping the chosen event chosen if it is still there."""
        chosen = self.selected()
        frame = self._queue_frame()
        self._pending = frame
        if not frame.equals(self.table.value):
            self.table.value = frame
            index = 0
            if chosen is not None and len(frame):
                hits = np.flatnonzero(frame["event_id"].to_numpy() == chosen["event_id"])
                index = int(hits[0]) if len(hits) else 0
            self.table.selection = [index] if len(frame) else []
        names = self.store.device_names()
        if names != self.pick.options:
            self.pick.options = names
        if names and self.pick.value not in names:
            self.pick.value = names[0]
        self.reload_button.visible = False
        waiting = self.store.queue_size()
        self.count.object = (
            f"{waiting:,} events wait for a label; the {len(frame):,} the models are least "
            "sure of come first."
            if len(frame)
            else "Nothing to label: every event has been confirmed, or none has been found yet."
        )
        self._show_selected()

    def refresh(self) -> None:
        """Note what changed since the queue was loaded, without moving rows under the cursor.

        The table reloads when the page is opened, after each label and on "Reload queue".
        """
        shown = self.table.value
        if shown is None or shown.empty:
            self.reload()
            return
        frame = self._queue_frame()
        if frame.equals(self._pending):
            return
        self._pending = frame
        fresh = len(set(frame["event_id"]) - set(shown["event_id"]))
        self.reload_button.visible = True
        self.count.object = (
            f"{self.store.queue_size():,} events wait for a label · <b>{fresh} new</b> and "
            "updated predictions since this list was loaded."
        )

    def _show_selected(self) -> None:
        row = self.selected()
        if row is None:
            self.detail.object = ""
            self.confirm.disabled = True
            self.confirm.label = "✓ Confirm"
            self.whole_cluster.visible = False
            return
        predicted = self._predicted()
        self.confirm.label = f"✓ It is {predicted}" if predicted else "✓ Confirm (no prediction)"
        self.confirm.disabled = self.read_only or predicted is None
        cluster = row.get("cluster_id")
        has_cluster = cluster is not None and not pd.isna(cluster)
        self.whole_cluster.visible = has_cluster
        if has_cluster:
            self.whole_cluster.label = f"label every event of unknown cluster {cluster}"
        event = self.store.event(str(row["event_id"]))
        self.detail.object = self._describe(event, predicted)
        if event is not None:
            self._draw_snippet(event)

    def _describe(self, event: dict[str, Any] | None, predicted: str | None) -> str:
        if event is None:
            return "<p>This event is no longer in the database; refresh the queue.</p>"
        direction = "switched on" if event["delta_p_w"] > 0 else "switched off"
        guess = (
            f"The models think it is <b style='color:{self.palette.color(predicted)}'>"
            f"{html.escape(predicted)}</b> ({(event['confidence'] or 0):.0%} sure)."
            if predicted
            else "The models do not know this device."
        )

        def num(key: str, fmt: str) -> str:
            value = event.get(key)
            return "—" if value is None or pd.isna(value) else format(value, fmt)

        return (
            f"<div style='font-size:1.05em'><b>{when(naive(event['ts']))} UTC</b>: something "
            f"{direction} on leg{'s a and b' if event['legs'] == 'ab' else ' ' + event['legs']}, "
            f"<b>{event['delta_p_w']:+,.0f} W</b>. {guess}</div>"
            "<table style='font-size:0.9em;color:#444;margin-top:4px'><tr>"
            f"<td>ΔQ {num('delta_q_var', '+,.0f')} var</td><td>ΔS {num('delta_s_va', '+,.0f')} VA"
            f"</td><td>Δpf {num('delta_pf', '+.2f')}</td><td>inrush "
            f"{num('inrush_peak_w', ',.0f')} W</td><td>ramp {num('ramp_s', '.0f')} s</td>"
            f"<td>novelty {num('novelty', '.2f')}</td><td>uncertainty "
            f"{num('uncertainty', '.2f')}</td></tr></table>"
        )

    def _build_snippet(self) -> None:
        """The power around the chosen event: one small figure, its data swapped per event."""
        self.snippet_source = ColumnDataSource({"ts": np.array([], "datetime64[ns]"),
                                                "w": np.array([], "float64")})  # fmt: skip
        fig = figure(
            x_axis_type="datetime", height=200, sizing_mode="stretch_width", toolbar_location=None,
            tools="", x_axis_label="time (UTC)", y_axis_label="W",
        )  # fmt: skip
        fig.xaxis.formatter = time_axis_formatter()
        self.snippet_line = fig.line("ts", "w", source=self.snippet_source, line_width=1.5)
        self.snippet_mark = Span(dimension="height", line_color="#c94c4c", line_dash="dotted",
                                 location=None)  # fmt: skip
        fig.add_layout(self.snippet_mark)
        self.snippet_figure = fig
        self.snippet = pn.pane.Bokeh(fig, sizing_mode="stretch_width", visible=False)

    def _draw_snippet(self, event: dict[str, Any]) -> None:
        with bokeh_edits():
            self._draw_snippet_now(event)

    def _draw_snippet_now(self, event: dict[str, Any]) -> None:
        try:
            view = self.store.power(
                event["ts"] - timedelta(minutes=2), event["ts"] + timedelta(minutes=3), "1 s"
            )
        except RangeProblem:
            self.snippet.visible = False
            return
        frame = view.frame
        key = "total" if event["legs"] == "ab" else event["legs"]
        set_data(
            self.snippet_source,
            {"ts": frame["ts"].to_numpy("datetime64[ns]"),
             "w": frame[f"{key}_mean"].to_numpy("float64")},
        )  # fmt: skip
        self.snippet_line.glyph.line_color = LEG_COLORS.get(key, "#333")
        self.snippet_figure.yaxis.axis_label = f"{LEG_LABELS.get(key, key)} (W)"
        self.snippet_mark.location = naive(event["ts"])
        self.snippet.visible = True

    # -- actions --------------------------------------------------------------------------
    def label_selected(self, device: Any) -> list[int]:
        """Store the chosen event as `device` (or its whole cluster); returns the label ids.

        Shows the outcome in the page; writes nothing when the name or event is not valid.
        """
        row = self.selected()
        if row is None:
            say(self.message, "Pick an event in the queue first.", "warning")
            return []
        name = "" if device is None else str(device)
        try:
            if self.whole_cluster.visible and self.whole_cluster.value:
                ids = self.store.label_cluster(str(row["cluster_id"]), name)
                done = f"{len(ids)} events of cluster {html.escape(str(row['cluster_id']))}"
            else:
                ids = [self.store.confirm_label(str(row["event_id"]), name)]
                done = f"the event at {when(row['ts'])} UTC"
        except ValueError as err:
            say(self.message, html.escape(str(err)), "danger")
            self.store.invalidate()  # the queue may be stale (an event that has gone)
            self.reload()
            return []
        clean = self.store.labels(limit=1)["device"].iloc[0]
        say(
            self.message,
            f"Stored: {done} is <b>{html.escape(str(clean))}</b> (label {ids[-1]}). "
            "The flow learns it within a few seconds; the event log shows its new predictions.",
            "success",
        )
        self.new_name.value = ""
        self.table.selection = []
        self.reload()
        if self.on_label is not None:
            self.on_label()
        return ids

    def __panel__(self) -> pn.viewable.Viewable:
        actions = pn.Row(
            pn.Column(pn.Spacer(height=18), self.confirm),
            pn.Column(self.pick, self.pick_button),
            pn.Column(self.new_name, self.new_button),
            pn.Column(pn.Spacer(height=18), self.whole_cluster),
        )
        return pn.Column(
            self.message, pn.Row(self.count, self.reload_button), self.table, self.detail,
            actions, self.snippet, sizing_mode="stretch_width", name="Label",
        )  # fmt: skip
