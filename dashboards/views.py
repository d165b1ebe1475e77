"""The dashboard's pages, one `pn.viewable.Viewer` each; all data comes from a `DataStore`.

Views do no model work: they query, draw and write labels. Each has `refresh()`, which the app
calls every second or two for the page in sight, and each says plainly when its table is
empty (the flow has not produced that yet) or when an input cannot be used.
Times are shown in UTC, as stored.
"""

from __future__ import annotations

import hashlib
import html
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, DatetimeTickFormatter, HoverTool
from bokeh.palettes import Category20
from bokeh.plotting import figure

from dashboards.store import LEG_CHOICES, RESOLUTIONS, DataStore, RangeProblem
from nilm.labelling import MAX_DEVICE_NAME_CHARS

__all__ = [
    "LIVE_WINDOWS",
    "DevicePalette",
    "DevicesView",
    "EventLog",
    "HealthView",
    "LabellingQueue",
    "LivePowerView",
    "Selection",
    "UnknownsView",
]

log = logging.getLogger(__name__)

hv.extension("bokeh", logo=False)

UNKNOWN = "(unknown)"
UNKNOWN_COLOR = "#9e9e9e"
LEG_COLORS = {"total": "#1f3b73", "a": "#d95f02", "b": "#1b9e77"}
LEG_LABELS = {"total": "total", "a": "leg a", "b": "leg b"}
LEG_SERIES = {"total": ("total",), "both": ("a", "b"), "a": ("a",), "b": ("b",)}
LIVE_WINDOWS = {
    "15 min": timedelta(minutes=15),
    "1 h": timedelta(hours=1),
    "6 h": timedelta(hours=6),
    "24 h": timedelta(hours=24),
    "7 days": timedelta(days=7),
    "30 days": timedelta(days=30),
}
# More markers than this hide the line; a long range shows the largest steps.
MAX_MARKERS = 600
# Category20 comes in dark/light pairs of one hue: use the ten dark ones first, so devices
# seen early differ clearly; grey is kept for unknown.
_PALETTE = [
    c for c in (*Category20[20][::2], *Category20[20][1::2]) if c not in ("#7f7f7f", "#c7c7c7")
]


def _naive(ts: datetime) -> datetime:
    return ts.astimezone(UTC).replace(tzinfo=None)


def _as_text_times(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Datetime columns as 'YYYY-MM-DD HH:MM:SS' text: sorts the same, and needs no JS library."""
    frame = frame.copy()
    for col in columns:
        if col in frame:
            frame[col] = pd.to_datetime(frame[col]).dt.strftime("%Y-%m-%d %H:%M:%S").fillna("—")
    return frame


def _percent(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    for col in columns:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce") * 100.0
    return frame


def _blanks(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Missing numbers as None, which the table shows as an empty cell rather than 'NaN'."""
    for col in columns:
        if col in frame:
            values = frame[col].astype(object)
            frame[col] = values.where(values.notna(), None)
    return frame


def _when(ts: Any) -> str:
    if ts is None or pd.isna(ts):
        return "—"
    return pd.Timestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


class DevicePalette:
    """One colour per device name, the same on every chart of a session.

    Names seen first get the palette in order; a name's colour never changes afterwards.
    """

    def __init__(self, names: list[str] | None = None) -> None:
        self._colors: dict[str, str] = {}
        for name in sorted(names or []):
            self.color(name)

    def color(self, name: Any) -> str:
        if name is None or (isinstance(name, float) and np.isnan(name)) or name == UNKNOWN:
            return UNKNOWN_COLOR
        key = str(name)
        if key not in self._colors:
            used = set(self._colors.values())
            free = [c for c in _PALETTE if c not in used]
            if free:
                self._colors[key] = free[0]
            else:
                digest = hashlib.blake2b(key.encode(), digest_size=2).digest()
                self._colors[key] = _PALETTE[int.from_bytes(digest, "big") % len(_PALETTE)]
        return self._colors[key]

    def swatches(self, names: list[str]) -> str:
        """HTML: a coloured dot and the name of each device (a legend for event markers)."""
        parts = [
            f'<span style="white-space:nowrap;margin-right:14px">'
            f'<span style="display:inline-block;width:11px;height:11px;border-radius:50%;'
            f'background:{self.color(n)};margin-right:4px;vertical-align:middle"></span>'
            f"{html.escape(str(n))}</span>"
            for n in names
        ]
        return " ".join(parts)


class Selection(param.Parameterized):
    """What a session has chosen across pages: the event to zoom to, the page to show."""

    event_id = param.String(default=None, allow_None=True)
    page = param.String(default="")


def _message(text: str = "", kind: str = "info") -> pn.pane.Alert:
    return pn.pane.Alert(text, alert_type=kind, visible=bool(text), margin=(5, 10))


def _say(alert: pn.pane.Alert, text: str, kind: str = "info") -> None:
    alert.object = text
    alert.alert_type = kind
    alert.visible = bool(text)


def _columns(frame: pd.DataFrame) -> dict[str, Any]:
    """A frame as a Bokeh data dict: datetimes as numpy datetime64, missing values as NaN."""
    out: dict[str, Any] = {}
    for col in frame.columns:
        series = frame[col]
        if pd.api.types.is_datetime64_any_dtype(series):
            out[col] = series.to_numpy("datetime64[ns]")
        elif pd.api.types.is_numeric_dtype(series):
            out[col] = series.to_numpy("float64", na_value=np.nan)
        else:
            out[col] = series.astype(object).where(series.notna(), None).tolist()
    return out


def _event_hover(renderers: list[Any] | None = None) -> HoverTool:
    return HoverTool(
        renderers=renderers or "auto",
        tooltips=[
            ("time", "@ts{%F %T}"),
            ("device", "@device (confidence @confidence{0%})"),
            ("legs", "@legs"),
            ("ΔP", "@delta_p_w{+0,0} W"),
            ("ΔQ", "@delta_q_var{+0,0} var"),
            ("ΔS", "@delta_s_va{+0,0} VA"),
            ("Δpf", "@delta_pf{+0.00}"),
            ("inrush peak", "@inrush_peak_w{0,0} W"),
            ("ramp", "@ramp_s{0.0} s"),
            ("novelty", "@novelty{0.00}"),
        ],
        formatters={"@ts": "datetime"},
    )


_MARKER_COLUMNS = [
    "y", "device", "color", "confidence", "legs", "delta_p_w", "delta_q_var", "delta_s_va",
    "delta_pf", "inrush_peak_w", "ramp_s", "novelty", "event_id",
]  # fmt: skip


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
        hi = _naive(bounds[1]) if bounds else datetime.now(UTC).replace(tzinfo=None)
        self.range = pn.widgets.DatetimeRangePicker(
            label="Date range (UTC)", value=(hi - timedelta(hours=1), hi), width=330
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
        self.message = _message()
        self.note = pn.pane.HTML("", styles={"color": "#555", "font-size": "0.9em"})
        self.legend = pn.pane.HTML("", margin=(0, 10))
        self.data = self._empty_data()
        self.last_view: Any = None
        self._quiet = False
        self._build_figures()
        self._show_options()
        self.pf.param.watch(lambda e: self._show_options(), "value")
        self.apparent.param.watch(lambda e: (self._show_options(), self.refresh()), "value")
        # markers sit on the line of their leg, so a change of legs redraws them too
        self.legs.param.watch(lambda e: (self._show_options(), self.refresh()), "value")
        for widget in (self.window, self.resolution):
            widget.param.watch(lambda e: None if self._quiet else self.refresh(), "value")
        self.range.param.watch(self._range_picked, "value")
        self.live.param.watch(lambda e: self._live_toggled(), "value")
        self.selection.param.watch(lambda e: self.zoom_to_event(e.new), "event_id")
        self.refresh()

    # -- data -----------------------------------------------------------------------------
    def _empty_data(self) -> dict[str, pd.DataFrame]:
        cols = ["ts", "n"] + [
            f"{k}_{q}" for k in ("total", "a", "b") for q in ("mean", "min", "max", "va", "pf")
        ]
        frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
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

    def _markers(self, events: pd.DataFrame, frame: pd.DataFrame) -> tuple[pd.DataFrame, ...]:
        if events.empty:
            empty = self._empty_data()["on"]
            return empty, empty
        ev = events.copy()
        ev["device"] = ev["shown_device"].fillna(UNKNOWN)
        ev["color"] = [self.palette.color(d) for d in ev["device"]]
        legs = self.legs.value
        x = frame["ts"].to_numpy("datetime64[ns]").astype("int64") if len(frame) else None
        t = ev["ts"].to_numpy("datetime64[ns]").astype("int64")
        if x is None:
            ev["y"] = ev["p_after_w"].astype("float64")
        else:
            series = {
                "total": np.full(len(ev), "total"),
                "a": np.full(len(ev), "a"),
                "b": np.full(len(ev), "b"),
                "both": np.where(ev["legs"] == "b", "b", "a"),
            }[legs]
            y = np.empty(len(ev))
            for name in ("total", "a", "b"):
                mask = series == name
                if mask.any():
                    y[mask] = np.interp(t[mask], x, frame[f"{name}_max"].to_numpy("float64"))
            ev["y"] = y
        for col in ("confidence", "novelty", "delta_q_var", "delta_s_va", "delta_pf",
                    "inrush_peak_w", "ramp_s"):  # fmt: skip
            ev[col] = pd.to_numeric(ev[col], errors="coerce").astype("float64")
        keep = ["ts", *_MARKER_COLUMNS]
        on = ev[ev["delta_p_w"] > 0][keep].reset_index(drop=True)
        off = ev[ev["delta_p_w"] <= 0][keep].reset_index(drop=True)
        return on, off

    def refresh(self) -> None:
        """Query the chosen range again and redraw (called every second or two when live)."""
        latest = self.store.latest_power()
        if latest is not None:
            self.now.value = round(latest["total"])
            at = _when(pd.Timestamp(latest["ts_us"], unit="us"))
            self.now_legs.object = (
                f"<div style='color:#555'>leg a {latest['a']:,.0f} W · "
                f"leg b {latest['b']:,.0f} W<br>at {at} UTC</div>"
            )
        try:
            start, end = self._current_range()
            view = self.store.power(start, end, self.resolution.value)
        except RangeProblem as err:
            _say(self.message, str(err), "warning")
            return
        events = self.store.events(view.start, view.end, limit=MAX_MARKERS, largest=True)
        on, off = self._markers(events, view.frame)
        self.last_view = view
        self.data = {"power": view.frame, "on": on, "off": off}
        self.power_source.data = _columns(view.frame)
        self.marker_sources["on"].data = _columns(on)
        self.marker_sources["off"].data = _columns(off)
        _say(self.message, "")
        shown = len(view.frame)
        bucket = "1 s" if view.bucket_s == 1 else f"{view.bucket_s:,} s"
        self.note.object = (
            f"{_when(_naive(view.start))} – {_when(_naive(view.end))} UTC · {shown:,} points of "
            f"{bucket} (band: min–max, line: mean)"
            + (f" · {view.note}" if view.note else "")
            + (
                f" · markers for the {MAX_MARKERS:,} largest events of the range"
                if len(events) >= MAX_MARKERS
                else ""
            )
        )
        if self.live.value:
            self._set_range(view.start, view.end)  # the picker shows what the chart shows
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
        self.legend.object = f"<b>Power</b> {lines}{events_part}"

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
        value = (_naive(start).replace(microsecond=0), _naive(end).replace(microsecond=0))
        if value == self.range.value:
            return
        self._quiet = True
        try:
            self.range.value = value
        finally:
            self._quiet = False

    def _live_toggled(self) -> None:
        if self._quiet:
            return
        self._set_live(self.live.value)
        self.refresh()

    def show_range(self, start: datetime, end: datetime) -> None:
        """Stop following live data and show `start`–`end` (UTC)."""
        self._set_live(False)
        self._quiet = True
        try:
            self.range.value = (_naive(start), _naive(end))
        finally:
            self._quiet = False
        self.refresh()

    def zoom_to_event(self, event_id: str | None) -> None:
        """Show the ten minutes around an event, at 1 s."""
        if not event_id:
            return
        event = self.store.event(event_id)
        if event is None:
            _say(self.message, f"Event {event_id} is no longer in the database.", "warning")
            return
        self._quiet = True
        try:
            self.resolution.value = "auto"
        finally:
            self._quiet = False
        self.show_range(event["ts"] - timedelta(minutes=5), event["ts"] + timedelta(minutes=5))

    # -- drawing --------------------------------------------------------------------------
    # Plain Bokeh, not HoloViews: one figure built once per session whose data sources are
    # replaced on each refresh, and whose options only toggle renderers' visibility. Building
    # the same chart through HoloViews cost ~0.8 s per session and per redraw.
    def _build_figures(self) -> None:
        empty = self._empty_data()
        self.power_source = ColumnDataSource(_columns(empty["power"]))
        self.marker_sources = {k: ColumnDataSource(_columns(empty[k])) for k in ("on", "off")}
        fig = figure(
            x_axis_type="datetime", sizing_mode="stretch_width", height=400,
            tools="xpan,xwheel_zoom,box_zoom,reset,save", active_scroll="xwheel_zoom",
            toolbar_location="above", x_axis_label="time (UTC)", y_axis_label="active power (W)",
        )  # fmt: skip
        fig.xaxis.formatter = DatetimeTickFormatter(hours="%H:%M", days="%b %d", months="%b %d")
        self.renderers: dict[str, list[Any]] = {}
        for key in ("total", "a", "b"):
            color = LEG_COLORS[key]
            band = fig.varea(
                "ts", f"{key}_min", f"{key}_max", source=self.power_source,
                fill_color=color, fill_alpha=0.18,
            )  # fmt: skip
            line = fig.line(
                "ts", f"{key}_mean", source=self.power_source, color=color, line_width=1.6,

            )  # fmt: skip
            va = fig.line(
                "ts", f"{key}_va", source=self.power_source, color=color, line_width=1.2,
                line_dash="dashed",
            )  # fmt: skip
            self.renderers[key] = [band, line]
            self.renderers[f"{key}_va"] = [va]
        markers = [
            fig.scatter(
                "ts", "y", source=self.marker_sources[kind], marker=marker, size=12,
                fill_color="color", line_color="white",
            )
            for kind, marker in (("on", "triangle"), ("off", "inverted_triangle"))
        ]  # fmt: skip
        fig.add_tools(_event_hover(markers))
        pf = figure(
            x_axis_type="datetime", sizing_mode="stretch_width", height=170,
            x_range=fig.x_range, y_range=(0, 1.05), tools="xpan,xwheel_zoom,reset",
            toolbar_location=None, y_axis_label="power factor",
        )  # fmt: skip
        pf.xaxis.formatter = fig.xaxis.formatter
        for key in ("total", "a", "b"):
            self.renderers[f"{key}_pf"] = [
                pf.line("ts", f"{key}_pf", source=self.power_source, color=LEG_COLORS[key],
                        line_width=1.2)
            ]  # fmt: skip
        self.figure, self.pf_figure = fig, pf
        self.plot = pn.pane.Bokeh(fig, sizing_mode="stretch_width")
        self.pf_plot = pn.pane.Bokeh(pf, sizing_mode="stretch_width")
        self.pf_box = pn.Column(sizing_mode="stretch_width")  # holds pf_plot when asked for

    def _show_options(self) -> None:
        shown = set(LEG_SERIES[self.legs.value])
        for key in ("total", "a", "b"):
            for renderer in self.renderers[key]:
                renderer.visible = key in shown
            for renderer in self.renderers[f"{key}_va"]:
                renderer.visible = key in shown and self.apparent.value
            for renderer in self.renderers[f"{key}_pf"]:
                renderer.visible = key in shown
        self.pf_box.objects = [self.pf_plot] if self.pf.value else []

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
            header, controls, self.message, self.legend, self.plot, self.pf_box, self.note,
            sizing_mode="stretch_width", name="Live",
        )  # fmt: skip


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


def _device_html(palette: DevicePalette, names: pd.Series) -> list[str]:
    return [f"<span style='color:{palette.color(n)}'>●</span> {html.escape(str(n))}" for n in names]


def _event_table_frame(events: pd.DataFrame, palette: DevicePalette) -> pd.DataFrame:
    if events.empty:
        return pd.DataFrame({c: [] for c in _EVENT_TABLE_COLUMNS})
    frame = events.copy()
    frame.loc[frame["shown_device"].isna(), "confidence"] = np.nan  # no device, no confidence
    frame["shown_device"] = frame["shown_device"].fillna(UNKNOWN)
    frame["device_html"] = _device_html(palette, frame["shown_device"])
    frame["confirmed"] = frame["confirmed_device"].notna() | frame["labelled"].fillna(False)
    frame["confirmed"] = frame["confirmed"].map({True: "✓ by you", False: ""})
    frame = _percent(_as_text_times(frame, "ts"), "confidence")
    frame = _blanks(frame, "confidence", "novelty")
    return frame[list(_EVENT_TABLE_COLUMNS)].reset_index(drop=True)


_NUMBER_FORMATTERS: dict[str, Any] = {
    "delta_p_w": {"type": "money", "thousand": ",", "symbol": "", "precision": 0},
    "confidence": {"type": "money", "symbol": " %", "symbolAfter": True, "precision": 0},
    "device_html": {"type": "html"},
    "novelty": {"type": "progress", "max": 1, "color": "#e07b39"},
    "uncertainty": {"type": "progress", "max": 1, "color": "#c94c4c"},
}


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
            formatters=_NUMBER_FORMATTERS,
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


_QUEUE_COLUMNS = {
    "ts": "time (UTC)",
    "delta_p_w": "ΔP (W)",
    "legs": "legs",
    "device_html": "predicted",
    "confidence": "confidence",
    "uncertainty": "uncertainty",
    "novelty": "novelty",
    "cluster_id": "cluster",
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
            formatters=_NUMBER_FORMATTERS,
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
        self.snippet = pn.pane.HoloViews(height=200, sizing_mode="stretch_width", linked_axes=False)
        self.confirm = pn.widgets.Button(label="✓ Confirm", color="success", disabled=True)
        self.pick = pn.widgets.Select(label="or pick another device", options=[], width=220)
        self.pick_button = pn.widgets.Button(label="Label as this device", color="primary")
        self.new_name = pn.widgets.TextInput(
            label="or name a new device", placeholder="e.g. kettle",
            max_length=MAX_DEVICE_NAME_CHARS * 4, width=220,
        )  # fmt: skip
        self.new_button = pn.widgets.Button(label="Name new device", color="primary")
        self.whole_cluster = pn.widgets.Checkbox(
            label="label every event of its unknown cluster", value=True, visible=False
        )
        self.message = _message()
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
            _say(
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
        queue = _percent(_as_text_times(queue, "ts"), "confidence")
        queue.loc[queue["device"].isna(), "confidence"] = np.nan  # no device, no confidence
        queue["device_html"] = _device_html(self.palette, queue["device"].fillna(UNKNOWN))
        queue = _blanks(queue, "confidence", "uncertainty", "novelty")
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
            f"<div style='font-size:1.05em'><b>{_when(_naive(event['ts']))} UTC</b>: something "
            f"{direction} on leg{'s a and b' if event['legs'] == 'ab' else ' ' + event['legs']}, "
            f"<b>{event['delta_p_w']:+,.0f} W</b>. {guess}</div>"
            "<table style='font-size:0.9em;color:#444;margin-top:4px'><tr>"
            f"<td>ΔQ {num('delta_q_var', '+,.0f')} var</td><td>ΔS {num('delta_s_va', '+,.0f')} VA"
            f"</td><td>Δpf {num('delta_pf', '+.2f')}</td><td>inrush "
            f"{num('inrush_peak_w', ',.0f')} W</td><td>ramp {num('ramp_s', '.0f')} s</td>"
            f"<td>novelty {num('novelty', '.2f')}</td><td>uncertainty "
            f"{num('uncertainty', '.2f')}</td></tr></table>"
        )

    def _draw_snippet(self, event: dict[str, Any]) -> None:
        try:
            view = self.store.power(
                event["ts"] - timedelta(minutes=2), event["ts"] + timedelta(minutes=3), "1 s"
            )
        except RangeProblem:
            self.snippet.object = None
            return
        frame = view.frame
        key = "total" if event["legs"] == "ab" else event["legs"]
        curve = hv.Curve(frame, ("ts", "time (UTC)"), (f"{key}_mean", "W")).opts(
            color=LEG_COLORS.get(key, "#333"), line_width=1.5, responsive=True, height=200,
            ylabel=f"{LEG_LABELS.get(key, key)} (W)", show_grid=True, toolbar=None,
        )  # fmt: skip
        mark = hv.VLine(_naive(event["ts"])).opts(color="#c94c4c", line_dash="dotted")
        self.snippet.object = curve * mark

    # -- actions --------------------------------------------------------------------------
    def label_selected(self, device: Any) -> list[int]:
        """Store the chosen event as `device` (or its whole cluster); returns the label ids.

        Shows the outcome in the page; writes nothing when the name or event is not valid.
        """
        row = self.selected()
        if row is None:
            _say(self.message, "Pick an event in the queue first.", "warning")
            return []
        name = "" if device is None else str(device)
        try:
            if self.whole_cluster.visible and self.whole_cluster.value:
                ids = self.store.label_cluster(str(row["cluster_id"]), name)
                done = f"{len(ids)} events of cluster {html.escape(str(row['cluster_id']))}"
            else:
                ids = [self.store.confirm_label(str(row["event_id"]), name)]
                done = f"the event at {_when(row['ts'])} UTC"
        except ValueError as err:
            _say(self.message, html.escape(str(err)), "danger")
            self.store.invalidate()  # the queue may be stale (an event that has gone)
            self.reload()
            return []
        clean = self.store.labels(limit=1)["device"].iloc[0]
        _say(
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
            pn.Row(self.count, self.reload_button), self.table, self.detail, actions,
            self.message, self.snippet, sizing_mode="stretch_width", name="Label",
        )  # fmt: skip


class DevicesView(pn.viewable.Viewer):
    """What each device uses: energy per day and share, runs, typical power, last seen."""

    def __init__(
        self, store: DataStore, palette: DevicePalette | None = None, **params: Any
    ) -> None:
        super().__init__(**params)
        self.store = store
        self.palette = palette or DevicePalette(store.device_names())
        self.days = pn.widgets.RadioButtonGroup(
            label="Period", options=["1 day", "7 days", "30 days"], value="7 days"
        )
        self.total = pn.indicators.Number(label="Whole house", format="{value:,.1f} kWh",
                                          font_size="24pt", title_size="11pt")  # fmt: skip
        self.base = pn.indicators.Number(label="Always on", format="{value:,.0f} W",
                                         font_size="24pt", title_size="11pt")  # fmt: skip
        self.unexplained = pn.indicators.Number(label="Unexplained", format="{value:,.1f} kWh",
                                                font_size="24pt", title_size="11pt")  # fmt: skip
        self.message = _message()
        self.per_day = pn.pane.HoloViews(sizing_mode="stretch_width", height=330, linked_axes=False)
        self.share = pn.pane.HoloViews(sizing_mode="stretch_width", height=330, linked_axes=False)
        self.timeline = pn.pane.HoloViews(
            sizing_mode="stretch_width", height=300, linked_axes=False
        )
        self.table = pn.widgets.Tabulator(
            pd.DataFrame(),
            disabled=True,
            show_index=False,
            sizing_mode="stretch_width",
            titles={"device": "device", "kwh": "energy (kWh)", "share": "share",
                    "runs_per_day": "runs / day", "typical_w": "typical power (W)",
                    "last_seen": "last seen (UTC)", "events": "events"},
            layout="fit_data_stretch",
            formatters={"share": {"type": "progress", "max": 1, "color": "#5b8def"},
                        "device": {"type": "html"},
                        "kwh": {"type": "money", "symbol": "", "precision": 2},
                        "runs_per_day": {"type": "money", "symbol": "", "precision": 1},
                        "typical_w": {"type": "money", "symbol": "", "precision": 0}},
        )  # fmt: skip
        self.days.param.watch(lambda e: self.refresh(), "value")
        self.refresh()

    def _range(self) -> tuple[datetime, datetime] | None:
        bounds = self.store.data_bounds()
        if bounds is None:
            return None
        days = int(self.days.value.split()[0])
        end = bounds[1] + timedelta(seconds=1)
        return max(end - timedelta(days=days), bounds[0]), end

    def refresh(self) -> None:
        span = self._range()
        if span is None:
            _say(self.message, "No readings yet: energy appears once the flow stores some.")
            return
        lo, hi = span
        breakdown = self.store.energy_breakdown(lo, hi)
        self.total.value = breakdown["total_wh"] / 1000
        self.base.value = breakdown["always_on_w"]
        self.unexplained.value = breakdown["unexplained_wh"] / 1000
        summary = self.store.device_summary(lo, hi)
        per_day = self.store.device_energy_per_day(lo, hi)
        house = self.store.house_energy_per_day(lo, hi)
        if per_day.empty:
            _say(
                self.message,
                "No device runs yet: energy per device appears when the flow pairs each on "
                "event with its off event. Until then the table counts events per device.",
            )
        else:
            _say(self.message, "")
        self.per_day.object = self._per_day_chart(per_day, house)
        self.share.object = self._share_chart(summary, breakdown)
        self.timeline.object = self._timeline(hi)
        table = _as_text_times(summary.assign(kwh=summary["energy_wh"] / 1000), "last_seen")
        table["device"] = _device_html(self.palette, table["device"])
        table = table[
            ["device", "kwh", "share", "runs_per_day", "typical_w", "events", "last_seen"]
        ]
        if not table.equals(self.table.value):
            self.table.value = table.reset_index(drop=True)

    def _per_day_chart(self, per_day: pd.DataFrame, house: pd.DataFrame) -> Any:
        rows = [
            (d.strftime("%m-%d"), str(dev), e / 1000)
            for d, dev, e in per_day[["date", "device", "energy_wh"]].itertuples(index=False)
        ]
        for date, base_wh, energy_wh in house[["date", "base_wh", "energy_wh"]].itertuples(
            index=False
        ):
            day = per_day[per_day["date"] == date]["energy_wh"].sum() if len(per_day) else 0.0
            rows.append((date.strftime("%m-%d"), "always on", base_wh / 1000))
            rows.append(
                (date.strftime("%m-%d"), "unexplained", max(energy_wh - base_wh - day, 0) / 1000)
            )
        frame = pd.DataFrame(rows, columns=["day", "device", "kWh"])
        colors = {d: self.palette.color(d) for d in frame["device"].unique()}
        colors.update({"always on": "#555555", "unexplained": "#d0d0d0"})
        return hv.Bars(frame, ["day", "device"], "kWh").opts(
            stacked=True, cmap=colors, color="device", responsive=True, height=320,
            title="Energy per day (kWh)", xlabel="day (UTC)", show_legend=False,
            tools=["hover"], line_color=None,
        )  # fmt: skip

    def _share_chart(self, summary: pd.DataFrame, breakdown: dict[str, float]) -> Any:
        rows = [(str(d), e / 1000) for d, e in summary[["device", "energy_wh"]].itertuples(
            index=False) if e > 0]  # fmt: skip
        rows += [("always on", breakdown["always_on_wh"] / 1000),
                 ("unexplained", breakdown["unexplained_wh"] / 1000)]  # fmt: skip
        frame = pd.DataFrame(rows, columns=["device", "kWh"]).sort_values("kWh")
        total = frame["kWh"].sum()
        frame["share"] = frame["kWh"] / total if total > 0 else 0.0
        colors = {d: self.palette.color(d) for d in frame["device"]}
        colors.update({"always on": "#555555", "unexplained": "#d0d0d0"})
        return hv.Bars(frame, "device", ["kWh", "share"]).opts(
            invert_axes=True, color="device", cmap=colors, responsive=True, height=320,
            title="Share of the house's energy", tools=["hover"], show_legend=False,
            line_color=None, xlabel="",
        )  # fmt: skip

    def _timeline(self, end: datetime) -> Any:
        runs = self.store.activations(end - timedelta(hours=24), end)
        if runs.empty:
            return hv.Text(0, 0, "No device runs in the last 24 h yet").opts(
                responsive=True, height=120, xaxis=None, yaxis=None, toolbar=None
            )
        runs = runs.assign(color=[self.palette.color(d) for d in runs["device"]])
        names = sorted(runs["device"].unique(), reverse=True)
        return hv.Segments(
            runs, [("start", "time (UTC)"), "device", "end", "device"],
            ["color", "power_w", "energy_wh"],
        ).opts(
            color="color", line_width=9, responsive=True, height=300,
            title="Which device ran when (last 24 h)", tools=["hover"], show_grid=True,
            xlabel="time (UTC)", ylabel="", default_tools=["xpan", "xwheel_zoom",
                                                                      "reset"],
        ).redim.values(device=names)  # fmt: skip

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(self.days, self.total, self.base, self.unexplained),
            self.message,
            pn.Row(self.per_day, self.share, sizing_mode="stretch_width"),
            self.timeline,
            self.table,
            sizing_mode="stretch_width",
            name="Devices",
        )


class UnknownsView(pn.viewable.Viewer):
    """Devices the models have not been taught: clusters of similar events, with examples."""

    def __init__(
        self,
        store: DataStore,
        read_only: bool = False,
        selection: Selection | None = None,
        on_label: Callable[[], None] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.store = store
        self.read_only = read_only
        self.selection = selection or Selection()
        self.on_label = on_label
        self.clusters = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, selectable=1, show_index=False,
            sizing_mode="stretch_width",
            titles={"cluster_id": "cluster", "n_events": "events",
                    "typical_delta_p_w": "typical ΔP (W)", "legs": "legs",
                    "last_seen": "last seen (UTC)", "name": "named"},
            layout="fit_data_stretch",
            formatters={"typical_delta_p_w": {"type": "money", "symbol": "", "precision": 0}},
        )  # fmt: skip
        self.examples = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, sizing_mode="stretch_width",
            hidden_columns=["event_id"],
            titles={"ts": "time (UTC)", "delta_p_w": "ΔP (W)", "legs": "legs",
                    "delta_q_var": "ΔQ (var)", "inrush_peak_w": "inrush (W)",
                    "novelty": "novelty"},
            layout="fit_data_stretch",
            formatters={"novelty": _NUMBER_FORMATTERS["novelty"],
                        "delta_p_w": _NUMBER_FORMATTERS["delta_p_w"],
                        "delta_q_var": _NUMBER_FORMATTERS["delta_p_w"],
                        "inrush_peak_w": _NUMBER_FORMATTERS["delta_p_w"]},
        )  # fmt: skip
        self.examples.on_click(self._example_clicked)
        self.name_input = pn.widgets.TextInput(
            label="Name this device", placeholder="e.g. well pump", width=240
        )
        self.name_button = pn.widgets.Button(
            label="Name it (labels all its events)", color="primary",
            disabled=read_only,
        )  # fmt: skip
        self.name_button.on_click(lambda e: self.name_selected(self.name_input.value))
        self.message = _message()
        self.count = pn.pane.HTML("")
        self.clusters.param.watch(lambda e: self._show_examples(), "selection")
        self.refresh()

    def selected_cluster(self) -> str | None:
        frame = self.clusters.value
        if frame is None or frame.empty:
            return None
        index = self.clusters.selection[0] if self.clusters.selection else 0
        return str(frame.iloc[index]["cluster_id"]) if index < len(frame) else None

    def refresh(self) -> None:
        frame = _as_text_times(self.store.clusters(), "last_seen")
        if not frame.equals(self.clusters.value):
            self.clusters.value = frame.reset_index(drop=True)
            if len(frame) and not self.clusters.selection:
                self.clusters.selection = [0]
        self.count.object = (
            f"{len(frame)} group{'s' if len(frame) != 1 else ''} of events that look alike but "
            "match no known device. Name one, and every event in it is labelled."
            if len(frame)
            else "No unknown devices: every event so far looks like a device the models know "
            "(or the flow has not clustered any yet)."
        )
        self._show_examples()

    def _show_examples(self) -> None:
        cluster = self.selected_cluster()
        examples = self.store.cluster_examples()
        if cluster is not None and len(examples):
            examples = examples[examples["cluster_id"] == cluster]
        cols = ["ts", "delta_p_w", "legs", "delta_q_var", "inrush_peak_w", "novelty", "event_id"]
        frame = (
            _as_text_times(examples[cols], "ts").reset_index(drop=True)
            if len(examples)
            else pd.DataFrame()
        )
        if not frame.equals(self.examples.value):
            self.examples.value = frame

    def _example_clicked(self, event: Any) -> None:
        if event.row is None or event.row >= len(self.examples.value):
            return
        self.selection.event_id = None
        self.selection.event_id = str(self.examples.value.iloc[event.row]["event_id"])
        self.selection.page = "Live"

    def name_selected(self, device: Any) -> list[int]:
        """Label every event of the chosen cluster `device`; returns the new label ids."""
        cluster = self.selected_cluster()
        if cluster is None:
            _say(self.message, "There is no unknown cluster to name.", "warning")
            return []
        try:
            ids = self.store.label_cluster(cluster, "" if device is None else str(device))
        except ValueError as err:
            _say(self.message, html.escape(str(err)), "danger")
            return []
        _say(
            self.message,
            f"Stored {len(ids)} labels: cluster {html.escape(cluster)} is "
            f"<b>{html.escape(' '.join(str(device).split()))}</b>. The flow learns them now.",
            "success",
        )
        self.name_input.value = ""
        self.refresh()
        if self.on_label is not None:
            self.on_label()
        return ids

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("### Unknown devices"),
            self.count,
            self.clusters,
            pn.pane.Markdown("**Latest events of the chosen group** (click one to see it)"),
            self.examples,
            pn.Row(self.name_input, pn.Column(pn.Spacer(height=18), self.name_button)),
            self.message,
            sizing_mode="stretch_width",
        )


class HealthView(pn.viewable.Viewer):
    """Health alerts: a device that draws more, runs longer or cycles more than it used to."""

    def __init__(self, store: DataStore, **params: Any) -> None:
        super().__init__(**params)
        self.store = store
        self.cards = pn.Column(sizing_mode="stretch_width")
        self._shown: pd.DataFrame | None = None
        self.refresh()

    def refresh(self) -> None:
        alerts = self.store.alerts()
        if self._shown is not None and alerts.equals(self._shown):
            return
        self._shown = alerts
        if alerts.empty:
            self.cards.objects = [
                pn.pane.Alert(
                    "No health alerts: every known device behaves as it used to.",
                    alert_type="success",
                )
            ]
            return
        cards = []
        for row in alerts.itertuples(index=False):
            change = "" if pd.isna(row.change) else f" ({row.change:+.0%})"
            before = "—" if pd.isna(row.before_value) else f"{row.before_value:,.1f}"
            after = "—" if pd.isna(row.after_value) else f"{row.after_value:,.1f}"
            cards.append(
                pn.pane.Alert(
                    f"<b>{html.escape(str(row.device))}</b>: {html.escape(str(row.message))}"
                    f"<br><small>{html.escape(str(row.metric))}: {before} → {after}{change} · "
                    f"since {_when(row.since)} UTC · noticed {_when(row.ts)} UTC</small>",
                    alert_type="warning",
                )
            )
        self.cards.objects = cards

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("### Health alerts"), self.cards, sizing_mode="stretch_width"
        )
