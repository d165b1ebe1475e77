"""The Devices page: what each device uses (energy per day, share, runs, typical power, last
seen) and which device ran when.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
from bokeh.models import ColumnDataSource, DatetimeTickFormatter, FactorRange
from bokeh.plotting import figure

from dashboards.store import DataStore
from dashboards.widgets import (
    ALWAYS_ON_COLOR,
    UNEXPLAINED_COLOR,
    DevicePalette,
    as_text_times,
    bokeh_columns,
    bokeh_edits,
    device_html,
    message,
    say,
    set_data,
    time_axis_formatter,
)

__all__ = ["DevicesView"]

log = logging.getLogger(__name__)


def _empty_stack() -> dict[str, Any]:
    empty = np.array([], "float64")
    return {"day": np.array([], "datetime64[ns]"), "device": [], "kwh": empty,
            "bottom": empty.copy(), "top": empty.copy(), "color": []}  # fmt: skip


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
        self.message = message()
        self._build_figures()
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
            say(self.message, "No readings yet: energy appears once the flow stores some.")
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
            say(
                self.message,
                "No device runs yet: energy per device appears when the flow pairs each on "
                "event with its off event. Until then the table counts events per device.",
            )
        else:
            say(self.message, "")
        with bokeh_edits():
            self._show_per_day(per_day, house)
            self._show_share(summary, breakdown)
            self._show_timeline(hi)
        table = as_text_times(summary.assign(kwh=summary["energy_wh"] / 1000), "last_seen")
        table["device"] = device_html(self.palette, table["device"])
        table = table[
            ["device", "kwh", "share", "runs_per_day", "typical_w", "events", "last_seen"]
        ]
        if not table.equals(self.table.value):
            self.table.value = table.reset_index(drop=True)

    # -- drawing --------------------------------------------------------------------------
    # Three plain Bokeh figures built once per session; a refresh gives their sources new
    # columns and their category axes new factors. Building them anew every refresh (as
    # HoloViews panes did) grew the tab by ~16 MB a second until it froze.
    def _build_figures(self) -> None:
        day_ms = 86_400_000
        self.per_day_source = ColumnDataSource(_empty_stack())
        per_day = figure(
            x_axis_type="datetime", height=330, sizing_mode="stretch_width",
            title="Energy per day (kWh)", x_axis_label="day (UTC)", y_axis_label="kWh",
            tools="hover,save", toolbar_location="above",
            tooltips=[("day", "@day{%F}"), ("", "@device"), ("energy", "@kwh{0.00} kWh")],
        )  # fmt: skip
        per_day.hover.formatters = {"@day": "datetime"}
        per_day.vbar(
            x="day", width=day_ms * 0.8, bottom="bottom", top="top", fill_color="color",
            line_color=None, source=self.per_day_source, legend_field="device",
        )  # fmt: skip
        per_day.xaxis.formatter = DatetimeTickFormatter(days="%b %d", months="%b %d")
        per_day.legend.location = "top_left"
        per_day.legend.label_text_font_size = "8pt"
        per_day.legend.background_fill_alpha = 0.6
        self.per_day_figure = per_day
        self.share_range = FactorRange(factors=[])
        self.share_source = ColumnDataSource(
            {"device": [], "kwh": np.array([], "float64"), "share": np.array([], "float64"),
             "color": []}
        )  # fmt: skip
        share = figure(
            y_range=self.share_range, height=330, sizing_mode="stretch_width",
            title="Share of the house's energy", x_axis_label="kWh", tools="hover,save",
            toolbar_location="above",
            tooltips=[("", "@device"), ("energy", "@kwh{0.00} kWh"), ("share", "@share{0%}")],
        )  # fmt: skip
        share.hbar(y="device", right="kwh", height=0.8, fill_color="color", line_color=None,
                   source=self.share_source)  # fmt: skip
        share.x_range.start = 0
        self.share_figure = share
        self.timeline_range = FactorRange(factors=[])
        self.timeline_source = ColumnDataSource(
            {"start": np.array([], "datetime64[ns]"), "end": np.array([], "datetime64[ns]"),
             "device": [], "color": [], "power_w": np.array([], "float64"),
             "energy_wh": np.array([], "float64")}
        )  # fmt: skip
        timeline = figure(
            x_axis_type="datetime", y_range=self.timeline_range, height=300,
            sizing_mode="stretch_width", title="Which device ran when (last 24 h)",
            x_axis_label="time (UTC)", tools="xpan,xwheel_zoom,reset,hover",
            active_scroll="xwheel_zoom", toolbar_location="above",
            tooltips=[("", "@device"), ("from", "@start{%F %T}"), ("to", "@end{%F %T}"),
                      ("power", "@power_w{0,0} W"), ("energy", "@energy_wh{0,0} Wh")],
        )  # fmt: skip
        timeline.hover.formatters = {"@start": "datetime", "@end": "datetime"}
        timeline.segment(x0="start", y0="device", x1="end", y1="device", line_color="color",
                         line_width=9, source=self.timeline_source)  # fmt: skip
        timeline.xaxis.formatter = time_axis_formatter()
        self.timeline_figure = timeline
        self.timeline_note = pn.pane.HTML("", styles={"color": "#555"})
        self.per_day = pn.pane.Bokeh(per_day, sizing_mode="stretch_width")
        self.share = pn.pane.Bokeh(share, sizing_mode="stretch_width")
        self.timeline = pn.pane.Bokeh(timeline, sizing_mode="stretch_width")

    def _color(self, device: str) -> str:
        return {"always on": ALWAYS_ON_COLOR, "unexplained": UNEXPLAINED_COLOR}.get(
            device, self.palette.color(device)
        )

    def _show_per_day(self, per_day: pd.DataFrame, house: pd.DataFrame) -> None:
        rows = [
            (date, str(dev), e / 1000)
            for date, dev, e in per_day[["date", "device", "energy_wh"]].itertuples(index=False)
        ]
        for date, base_wh, energy_wh in house[["date", "base_wh", "energy_wh"]].itertuples(
            index=False
        ):
            day = per_day[per_day["date"] == date]["energy_wh"].sum() if len(per_day) else 0.0
            rows.append((date, "always on", base_wh / 1000))
            rows.append((date, "unexplained", max(energy_wh - base_wh - day, 0) / 1000))
        frame = pd.DataFrame(rows, columns=["day", "device", "kwh"])
        if frame.empty:
            set_data(self.per_day_source, _empty_stack())
            return
        # Devices by name, then the base at the bottom and the unexplained on top, every day.
        order = {"always on": 0, "unexplained": 2}
        frame["rank"] = [order.get(d, 1) for d in frame["device"]]
        frame = frame.sort_values(["day", "rank", "device"], kind="stable")
        frame["top"] = frame.groupby("day")["kwh"].cumsum()
        frame["bottom"] = frame["top"] - frame["kwh"]
        frame["day"] = pd.to_datetime(frame["day"]) + pd.Timedelta(hours=12)
        frame["color"] = [self._color(d) for d in frame["device"]]
        set_data(
            self.per_day_source,
            bokeh_columns(frame[["day", "device", "kwh", "bottom", "top", "color"]]),
        )

    def _show_share(self, summary: pd.DataFrame, breakdown: dict[str, float]) -> None:
        rows = [(str(d), e / 1000) for d, e in summary[["device", "energy_wh"]].itertuples(
            index=False) if e > 0]  # fmt: skip
        rows += [("always on", breakdown["always_on_wh"] / 1000),
                 ("unexplained", breakdown["unexplained_wh"] / 1000)]  # fmt: skip
        frame = pd.DataFrame(rows, columns=["device", "kwh"]).sort_values(
            ["kwh", "device"], kind="stable"
        )
        total = frame["kwh"].sum()
        frame["share"] = frame["kwh"] / total if total > 0 else 0.0
        frame["color"] = [self._color(d) for d in frame["device"]]
        factors = list(frame["device"])
        if factors != list(self.share_range.factors):
            self.share_range.factors = factors
        set_data(self.share_source, bokeh_columns(frame[["device", "kwh", "share", "color"]]))

    def _show_timeline(self, end: datetime) -> None:
        runs = self.store.activations(end - timedelta(hours=24), end)
        runs = runs.assign(color=[self.palette.color(d) for d in runs["device"]])
        names = sorted(runs["device"].unique(), reverse=True) if len(runs) else []
        if names != list(self.timeline_range.factors):
            self.timeline_range.factors = names
        set_data(
            self.timeline_source,
            bokeh_columns(runs[["start", "end", "device", "color", "power_w", "energy_wh"]]),
        )
        note = "" if len(runs) else "No device runs in the last 24 h yet."
        if note != self.timeline_note.object:
            self.timeline_note.object = note

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.Row(self.days, self.total, self.base, self.unexplained),
            self.message,
            pn.Row(self.per_day, self.share, sizing_mode="stretch_width"),
            self.timeline_note,
            self.timeline,
            self.table,
            sizing_mode="stretch_width",
            name="Devices",
        )
