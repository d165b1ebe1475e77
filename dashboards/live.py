"""The Live page: total and per-leg power with event markers, and what is on now.

One Bokeh figure per session, built once; each refresh streams the new readings onto it (or
gives its sources new columns when the range moved), so the page costs the same after a day
as after a minute.
"""

from __future__ import annotations

import html
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, Line, Scatter, VArea
from bokeh.plotting import figure

from dashboards.store import LEG_CHOICES, RESOLUTIONS, DataStore, PowerView, RangeProblem
from dashboards.widgets import (
    ALWAYS_ON_COLOR,
    LEG_COLORS,
    LEG_LABELS,
    LEG_SERIES,
    LIVE_WINDOWS,
    UNEXPLAINED_COLOR,
    UNKNOWN,
    DevicePalette,
    Selection,
    bokeh_columns,
    bokeh_edits,
    event_hover,
    message,
    naive,
    say,
    set_data,
    time_axis_formatter,
    when,
)
from nilm.now import NowSnapshot

__all__ = ["MAX_MARKERS", "LivePowerView", "now_html", "step_tops"]

log = logging.getLogger(__name__)

# More markers than this hide the line; a long range shows the largest steps.
MAX_MARKERS = 600
_MARKER_COLUMNS = [
    "y", "device", "color", "confidence", "legs", "delta_p_w", "delta_q_var", "delta_s_va",
    "delta_pf", "inrush_peak_w", "ramp_s", "novelty", "event_id", "fill_alpha", "line_color",
    "status",
]  # fmt: skip
_POWER_COLUMNS = ["ts", "n"] + [
    f"{k}_{q}" for k in ("total", "a", "b") for q in ("mean", "min", "max", "va", "pf")
]


def step_tops(
    event_ns: np.ndarray,
    rising: np.ndarray,
    ramp_s: np.ndarray,
    bucket_ns: np.ndarray,
    level: np.ndarray,
    bucket_s: int,
) -> np.ndarray:
    """Where an event's marker sits: the level after an on step, before an off step.

    `bucket_ns` are the chart's bucket starts and `level` their mean power. An on step's top
    is the first bucket that starts once the step and its ramp are over; an off step's is the
    last bucket that ends before it begins. Interpolating at the step's own second would put
    the marker half-way up it. Events beyond the data take the nearest bucket.

    Examples
    --------
    >>> x = np.arange(6) * 1_000_000_000  # 1 s buckets
    >>> level = np.array([100.0, 100.0, 2000.0, 3000.0, 3000.0, 3000.0])
    >>> step_tops(np.array([2_000_000_000]), np.array([True]), np.array([1.0]), x, level, 1)
    array([3000.])
    >>> step_tops(np.array([2_000_000_000]), np.array([False]), np.array([0.0]), x, level, 1)
    array([100.])
    """
    if len(bucket_ns) == 0:
        return np.full(len(event_ns), np.nan)
    width = bucket_s * 1_000_000_000
    ramp_ns = (np.nan_to_num(np.maximum(ramp_s, 0.0)) * 1e9).astype("int64")
    after = np.searchsorted(bucket_ns, event_ns + ramp_ns + 1, side="left")
    # A 1 s step lands inside its own second's bucket: the level after starts one bucket on.
    after = np.minimum(after + (bucket_s == 1), len(bucket_ns) - 1)
    before = np.searchsorted(bucket_ns, event_ns - width, side="right") - 1
    before = np.clip(before, 0, len(bucket_ns) - 1)
    return np.where(rising, level[after], level[before]).astype("float64")


def now_html(now: NowSnapshot, palette: DevicePalette) -> str:
    """The 'on now' list: each running device with its draw, the base, the unexplained rest."""

    def item(color: str, name: str, watts: float, note: str = "") -> str:
        return (
            f"<span style='white-space:nowrap;margin-right:16px'><span style='display:"
            f"inline-block;width:11px;height:11px;border-radius:50%;background:{color};"
            f"margin-right:4px;vertical-align:middle'></span>{html.escape(name)} "
            f"<b>{watts:,.0f} W</b>{note}</span>"
        )

    parts = []
    for device in now.running:
        name = device.device
        if name == UNKNOWN and device.cluster_id:
            name = f"{UNKNOWN} group {device.cluster_id}"
        since = f" <small style='color:#777'>since {naive(device.since):%H:%M}</small>"
        parts.append(item(palette.color(device.device), name, device.power_w, since))
    if not parts:
        parts.append("<span style='color:#777;margin-right:16px'>no device running</span>")
    parts.append(item(ALWAYS_ON_COLOR, "always on", now.always_on_w))
    parts.append(item(UNEXPLAINED_COLOR, "unexplained", now.unexplained_w))
    return "<div><b>On now</b>&nbsp; " + " ".join(parts) + "</div>"


class LivePowerView(pn.viewable.Viewer):
    """Total and per-leg power with event markers; follows the latest reading when live.

    Parameters
    ----------
    store
        Where the data comes from.
    palette
        The session's device colours.
    selection
        The session's selection; an event chosen elsewhere zooms this chart to it.
    window
        The live window, one of `LIVE_WINDOWS`.
    """

    def __init__(
        self,
        store: DataStore,
        palette: DevicePalette | None = None,
        selection: Selection | None = None,
        window: str = "1 h",
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.store = store
        self.palette = palette or DevicePalette(store.device_names())
        self.selection = selection or Selection()
        if window not in LIVE_WINDOWS:
            raise ValueError(f"live window {window!r} is not one of {list(LIVE_WINDOWS)}")
        self.live = pn.widgets.Toggle(label="● Live", value=True, color="success", width=90)
        self.window = pn.widgets.RadioButtonGroup(
            options=list(LIVE_WINDOWS), value=window, color="default"
        )
        bounds = store.data_bounds()
        hi = naive(bounds[1]) if bounds else datetime.now(UTC).replace(tzinfo=None)
        self.range = pn.widgets.DatetimeRangePicker(
            label="Date range (UTC)", value=(hi - LIVE_WINDOWS[window], hi), width=330
        )
        self.legs = pn.widgets.RadioButtonGroup(
            label="Legs", options=list(LEG_CHOICES), value="total", color="default"
        )
        self.resolution = pn.widgets.RadioButtonGroup(
            label="Resolution", options=list(RESOLUTIONS), value="auto", color="default"
        )
        self.apparent = pn.widgets.Checkbox(label="apparent power (VA)", value=False)
        self.pf = pn.widgets.Checkbox(label="power factor", value=False)
        self.now = pn.indicators.Number(
            label="Now", value=0, format="{value:,.0f} W", font_size="30pt", title_size="11pt"
        )
        self.now_legs = pn.pane.HTML("", margin=(0, 10))
        self.on_now = pn.pane.HTML("", margin=(0, 10), sizing_mode="stretch_width")
        self.message = message()
        self.note = pn.pane.HTML("", styles={"color": "#555", "font-size": "0.9em"})
        self.legend = pn.pane.HTML("", margin=(0, 10))
        self.data = self._empty_data()
        self.last_view: PowerView | None = None
        self.last_snapshot: NowSnapshot | None = None
        self._shown_bucket_s: int | None = None
        self._quiet = False
        self._build_figures()
        self._show_options()
        self.pf.param.watch(lambda e: self._show_options(), "value")
        self.apparent.param.watch(lambda e: (self._show_options(), self.refresh()), "value")
        # markers sit on the line of their leg, so a change of legs redraws them too
        self.legs.param.watch(lambda e: (self._show_options(), self.refresh()), "value")
        self.window.param.watch(self._window_changed, "value")
        self.resolution.param.watch(lambda e: None if self._quiet else self.refresh(), "value")
        self.range.param.watch(self._range_picked, "value")
        self.live.param.watch(lambda e: self._live_toggled(), "value")
        self.selection.param.watch(lambda e: self.zoom_to_event(e.new), "event_id")
        self._show_live_range()
        self.refresh()

    # -- data -----------------------------------------------------------------------------
    @staticmethod
    def _empty_data() -> dict[str, pd.DataFrame]:
        frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in _POWER_COLUMNS})
        frame["ts"] = pd.Series(dtype="datetime64[ns]")
        markers = pd.DataFrame({c: pd.Series(dtype="object") for c in _MARKER_COLUMNS})
        markers.insert(0, "ts", pd.Series(dtype="datetime64[ns]"))
        markers["y"] = markers["y"].astype("float64")
        return {"power": frame, "on": markers, "off": markers}

    def _current_range(self) -> tuple[datetime, datetime]:
        if self.live.value:
            bounds = self.store.data_bounds()
            if bounds is None:
                raise RangeProblem(
                    "No readings yet: the chart starts as soon as the flow stores the first one."
                )
            end = bounds[1] + timedelta(seconds=1)
            return end - LIVE_WINDOWS[self.window.value], end
        start, end = self.range.value
        return start, end

    def _markers(self, events: pd.DataFrame, view: PowerView) -> tuple[pd.DataFrame, ...]:
        if events.empty:
            empty = self._empty_data()["on"]
            return empty, empty
        frame = view.frame
        ev = events.copy()
        ev["device"] = ev["shown_device"].fillna(UNKNOWN)
        ev["color"] = [self.palette.color(d) for d in ev["device"]]
        t = ev["ts"].to_numpy("datetime64[ns]").astype("int64")
        rising = (ev["delta_p_w"] > 0).to_numpy()
        if len(frame) == 0:
            ev["y"] = np.where(rising, ev["p_after_w"], ev["p_before_w"]).astype("float64")
        else:
            x = frame["ts"].to_numpy("datetime64[ns]").astype("int64")
            ramp = pd.to_numeric(ev["ramp_s"], errors="coerce").to_numpy("float64")
            series = {
                "total": np.full(len(ev), "total"),
                "a": np.full(len(ev), "a"),
                "b": np.full(len(ev), "b"),
                "both": np.where(ev["legs"] == "b", "b", "a"),
            }[self.legs.value]
            y = np.empty(len(ev))
            for name in ("total", "a", "b"):
                mask = series == name
                if mask.any():
                    level = frame[f"{name}_mean"].to_numpy("float64")
                    y[mask] = step_tops(t[mask], rising[mask], ramp[mask], x, level, view.bucket_s)
            ev["y"] = y
        for col in ("confidence", "novelty", "delta_q_var", "delta_s_va", "delta_pf",
                    "inrush_peak_w", "ramp_s"):  # fmt: skip
            ev[col] = pd.to_numeric(ev[col], errors="coerce").astype("float64")
        # a provisional event's marker is hollow, drawn in its colour, until the flow settles it
        provisional = ev["provisional"].fillna(False).astype(bool).to_numpy()
        ev["fill_alpha"] = np.where(provisional, 0.0, 1.0)
        ev["line_color"] = np.where(provisional, ev["color"], "white")
        ev["status"] = np.where(provisional, "provisional", "")
        keep = ["ts", *_MARKER_COLUMNS]
        on = ev[rising][keep].reset_index(drop=True)
        off = ev[~rising][keep].reset_index(drop=True)
        return on, off

    def _show_power(self, view: PowerView) -> None:
        """Stream the new buckets onto the chart when the old ones still hold; else swap."""
        new = bokeh_columns(view.frame)
        old = self.power_source.data
        if self._shown_bucket_s == view.bucket_s and len(new["ts"]) and len(old.get("ts", [])):
            old_ts, new_ts = np.asarray(old["ts"]), new["ts"]
            at = int(np.searchsorted(new_ts, old_ts[-1]))
            overlap = at + 1
            if at < len(new_ts) and new_ts[at] == old_ts[-1] and overlap <= len(old_ts):
                # the buckets both hold, bar the last old one (it may have filled since)
                keep = all(
                    np.array_equal(np.asarray(old[c])[-overlap:-1], new[c][: overlap - 1],
                                   equal_nan=new[c].dtype.kind == "f")
                    for c in new
                )  # fmt: skip
                if keep:
                    last = len(old_ts) - 1
                    patch = {
                        c: [(last, new[c][at])]
                        for c in new
                        if c != "ts" and not _same_value(old[c][last], new[c][at])
                    }
                    if patch:
                        self.power_source.patch(patch)
                    if overlap < len(new_ts):
                        tail = {c: new[c][overlap:] for c in new}
                        self.power_source.stream(tail, rollover=len(new_ts))
                    elif len(old_ts) > len(new_ts):
                        self.power_source.data = new  # the window shrank
                    return
        self._shown_bucket_s = view.bucket_s
        set_data(self.power_source, new)

    def refresh(self) -> None:
        """Query the chosen range again and update the chart in place (every second when live)."""
        with bokeh_edits():
            self._refresh()

    def _refresh(self) -> None:
        self._show_now()
        try:
            start, end = self._current_range()
            view = self.store.power(start, end, self.resolution.value)
        except RangeProblem as err:
            say(self.message, str(err), "warning")
            return
        events = self.store.events(view.start, view.end, limit=MAX_MARKERS, largest=True)
        on, off = self._markers(events, view)
        self.last_view = view
        self.data = {"power": view.frame, "on": on, "off": off}
        self._show_power(view)
        set_data(self.marker_sources["on"], bokeh_columns(on))
        set_data(self.marker_sources["off"], bokeh_columns(off))
        if self.message.visible:
            say(self.message, "")
        bucket = "1 s" if view.bucket_s == 1 else f"{view.bucket_s:,} s"
        note = (
            f"{when(naive(view.start))} – {when(naive(view.end))} UTC · {len(view.frame):,} "
            f"points of {bucket} (band: min–max, line: mean)"
            + (f" · {view.note}" if view.note else "")
            + (
                f" · markers for the {MAX_MARKERS:,} largest events of the range"
                if len(events) >= MAX_MARKERS
                else ""
            )
        )
        if note != self.note.object:
            self.note.object = note
        devices = sorted(set(events["shown_device"].fillna(UNKNOWN))) if len(events) else []
        lines = " ".join(
            f"<span style='white-space:nowrap;margin-right:12px'><span style='display:"
            f"inline-block;width:18px;border-top:{'2px dashed' if va else '3px solid'} "
            f"{LEG_COLORS[k]};vertical-align:middle;margin-right:4px'></span>"
            f"{LEG_LABELS[k]}{' apparent (VA)' if va else ''}</span>"
            for k in LEG_SERIES[self.legs.value]
            for va in ((False, True) if self.apparent.value else (False,))
        )
        events_part = (
            " · <b>Events</b> ▲ on ▼ off: " + self.palette.swatches(devices) if devices else ""
        )
        legend = f"<b>Power</b> {lines}{events_part}"
        if legend != self.legend.object:
            self.legend.object = legend

    def _show_now(self) -> None:
        latest = self.store.latest_power()
        if latest is None:
            return
        total = round(latest["total"])
        if total != self.now.value:
            self.now.value = total
        at = when(pd.Timestamp(latest["ts_us"], unit="us"))
        legs = (
            f"<div style='color:#555'>leg a {latest['a']:,.0f} W · "
            f"leg b {latest['b']:,.0f} W<br>at {at} UTC</div>"
        )
        if legs != self.now_legs.object:
            self.now_legs.object = legs
        snapshot = self.store.now()
        self.last_snapshot = snapshot
        text = now_html(snapshot, self.palette)
        if text != self.on_now.object:
            self.on_now.object = text

    # -- controls -------------------------------------------------------------------------
    # Widgets the view sets itself must still reach the browser, so their watchers check
    # `_quiet` instead of the view discarding events (which would skip Panel's sync too).
    def _range_picked(self, event: Any) -> None:
        """A range chosen by hand stops following live data and is shown as chosen."""
        if self._quiet:
            return
        self._set_live(False)
        self.refresh()

    def _set_live(self, live: bool) -> None:
        self._quiet = True
        try:
            self.live.value = live
        finally:
            self._quiet = False
        self.live.label = "● Live" if live else "❚❚ Paused"
        self.live.color = "success" if live else "default"

    def _set_range(self, start: datetime, end: datetime) -> None:
        value = (naive(start).replace(microsecond=0), naive(end).replace(microsecond=0))
        if value == self.range.value:
            return
        self._quiet = True
        try:
            self.range.value = value
        finally:
            self._quiet = False

    def _show_live_range(self) -> None:
        """Put the live window in the picker: once when live starts or the window changes.

        Not on every refresh: a value pushed while a person is half-way through picking a
        range would wipe what they had picked.
        """
        try:
            start, end = self._current_range()
        except RangeProblem:
            return
        self._set_range(start, end)

    def _window_changed(self, event: Any) -> None:
        if self._quiet:
            return
        if self.live.value:
            self._show_live_range()
        self.refresh()

    def _live_toggled(self) -> None:
        if self._quiet:
            return
        self._set_live(self.live.value)
        if self.live.value:
            self._show_live_range()
        self.refresh()

    def show_range(self, start: datetime, end: datetime) -> None:
        """Stop following live data and show `start`–`end` (UTC)."""
        self._set_live(False)
        self._quiet = True
        try:
            self.range.value = (naive(start), naive(end))
        finally:
            self._quiet = False
        self.refresh()

    def zoom_to_event(self, event_id: str | None) -> None:
        """Show the ten minutes around an event, at 1 s."""
        if not event_id:
            return
        event = self.store.event(event_id)
        if event is None:
            say(self.message, f"Event {event_id} is no longer in the database.", "warning")
            return
        self._quiet = True
        try:
            self.resolution.value = "auto"
        finally:
            self._quiet = False
        self.show_range(event["ts"] - timedelta(minutes=5), event["ts"] + timedelta(minutes=5))

    # -- drawing --------------------------------------------------------------------------
    # Plain Bokeh, not HoloViews: one figure built once per session whose data sources are
    # updated on each refresh, and whose options only toggle renderers' visibility. Building
    # the same chart through HoloViews cost ~0.8 s per session and per redraw.
    def _build_figures(self) -> None:
        empty = self._empty_data()
        self.power_source = ColumnDataSource(bokeh_columns(empty["power"]))
        self.marker_sources = {k: ColumnDataSource(bokeh_columns(empty[k])) for k in ("on", "off")}
        fig = figure(
            x_axis_type="datetime", sizing_mode="stretch_width", height=400,
            tools="xpan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
            toolbar_location="above", x_axis_label="time (UTC)", y_axis_label="active power (W)",
        )  # fmt: skip
        fig.xaxis.formatter = time_axis_formatter()
        # Glyphs are added bare (BokehJS derives the selection and muted looks itself) and the
        # apparent-power lines only when first asked for: each model costs the first paint
        # twice, once to build in the server and once in the browser.
        self.renderers: dict[str, list[Any]] = {}
        for key in ("total", "a", "b"):
            color = LEG_COLORS[key]
            band = fig.add_glyph(self.power_source, VArea(
                x="ts", y1=f"{key}_min", y2=f"{key}_max", fill_color=color, fill_alpha=0.18,
            ))  # fmt: skip
            line = fig.add_glyph(
                self.power_source, Line(x="ts", y=f"{key}_mean", line_color=color, line_width=1.6)
            )
            self.renderers[key] = [band, line]
            self.renderers[f"{key}_va"] = []
        markers = [
            fig.add_glyph(self.marker_sources[kind], Scatter(
                x="ts", y="y", marker=marker, size=12, fill_color="color",
                fill_alpha="fill_alpha", line_color="line_color", line_width=2,
            ))
            for kind, marker in (("on", "triangle"), ("off", "inverted_triangle"))
        ]  # fmt: skip
        fig.add_tools(event_hover(markers))
        self.figure = fig
        self.plot = pn.pane.Bokeh(fig, sizing_mode="stretch_width")
        # Built when first asked for (a third of the page's models), then shown and hidden,
        # never rebuilt: a toggle creates no models after the first.
        self.pf_figure: Any = None
        self.pf_plot = pn.Column(sizing_mode="stretch_width", visible=False)

    def _build_pf_figure(self) -> None:
        pf = figure(
            x_axis_type="datetime", sizing_mode="stretch_width", height=170,
            x_range=self.figure.x_range, y_range=(0, 1.05), tools="xpan,xwheel_zoom,reset",
            toolbar_location=None, y_axis_label="power factor",
        )  # fmt: skip
        pf.xaxis.formatter = self.figure.xaxis.formatter
        for key in ("total", "a", "b"):
            self.renderers[f"{key}_pf"] = [
                pf.line("ts", f"{key}_pf", source=self.power_source, color=LEG_COLORS[key],
                        line_width=1.2)
            ]  # fmt: skip
        self.pf_figure = pf
        self.pf_plot.objects = [pn.pane.Bokeh(pf, sizing_mode="stretch_width")]

    def _show_options(self) -> None:
        with bokeh_edits():
            self._show_chosen_series()

    def _build_va_lines(self) -> None:
        for key in ("total", "a", "b"):
            self.renderers[f"{key}_va"] = [
                self.figure.add_glyph(self.power_source, Line(
                    x="ts", y=f"{key}_va", line_color=LEG_COLORS[key], line_width=1.2,
                    line_dash="dashed",
                ))
            ]  # fmt: skip

    def _show_chosen_series(self) -> None:
        if self.pf.value and self.pf_figure is None:
            self._build_pf_figure()
        if self.apparent.value and not self.renderers["total_va"]:
            self._build_va_lines()
        shown = set(LEG_SERIES[self.legs.value])
        for key in ("total", "a", "b"):
            for renderer in self.renderers[key]:
                renderer.visible = key in shown
            for renderer in self.renderers[f"{key}_va"]:
                renderer.visible = key in shown and self.apparent.value
            for renderer in self.renderers.get(f"{key}_pf", []):
                renderer.visible = key in shown
        self.pf_plot.visible = bool(self.pf.value)

    def __panel__(self) -> pn.viewable.Viewable:
        controls = pn.Row(
            self.live,
            pn.Column(pn.pane.HTML("<small>live window</small>", margin=(0, 5)), self.window),
            self.range,
            pn.Column(pn.pane.HTML("<small>legs</small>", margin=(0, 5)), self.legs),
            pn.Column(pn.pane.HTML("<small>resolution</small>", margin=(0, 5)), self.resolution),
            pn.Column(self.apparent, self.pf),
            sizing_mode="stretch_width",
        )
        header = pn.Row(self.now, self.now_legs, pn.Spacer(), sizing_mode="stretch_width")
        return pn.Column(
            header, self.on_now, controls, self.message, self.legend, self.plot, self.pf_plot,
            self.note, sizing_mode="stretch_width", name="Live",
        )  # fmt: skip


def _same_value(a: Any, b: Any) -> bool:
    try:
        return bool(a == b or (pd.isna(a) and pd.isna(b)))
    except (TypeError, ValueError):
        return False
