"""What every page shares: the device palette, the session's selection, colours, formatters and
the small helpers that turn query results into what Bokeh and Tabulator draw.

Pages update their charts in place: `set_data` gives a `ColumnDataSource` new columns only when
they differ, so a refresh with nothing new sends nothing to the browser and no page ever builds
new Bokeh models on a timer (a page that did grew its tab by a gigabyte a minute).
"""

from __future__ import annotations

import hashlib
import html
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import ColumnDataSource, DatetimeTickFormatter, HoverTool
from bokeh.palettes import Category20
from panel.io.document import unlocked

__all__ = [
    "LEG_COLORS",
    "LEG_LABELS",
    "LEG_SERIES",
    "LIVE_WINDOWS",
    "NUMBER_FORMATTERS",
    "PROVISIONAL_BADGE",
    "UNKNOWN",
    "UNKNOWN_COLOR",
    "DevicePalette",
    "Selection",
    "as_text_times",
    "blanks",
    "bokeh_columns",
    "bokeh_edits",
    "device_html",
    "event_hover",
    "mark_provisional",
    "message",
    "naive",
    "percent",
    "say",
    "set_data",
    "time_axis_formatter",
    "when",
]

UNKNOWN = "(unknown)"
UNKNOWN_COLOR = "#9e9e9e"
ALWAYS_ON_COLOR = "#555555"
UNEXPLAINED_COLOR = "#d0d0d0"
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
# Category20 comes in dark/light pairs of one hue: use the ten dark ones first, so devices
# seen early differ clearly; grey is kept for unknown.
_PALETTE = [
    c for c in (*Category20[20][::2], *Category20[20][1::2]) if c not in ("#7f7f7f", "#c7c7c7")
]
NUMBER_FORMATTERS: dict[str, Any] = {
    "delta_p_w": {"type": "money", "thousand": ",", "symbol": "", "precision": 0},
    "confidence": {"type": "money", "symbol": " %", "symbolAfter": True, "precision": 0},
    "device_html": {"type": "html"},
    "novelty": {"type": "progress", "max": 1, "color": "#e07b39"},
    "uncertainty": {"type": "progress", "max": 1, "color": "#c94c4c"},
}


def naive(ts: datetime) -> datetime:
    """A datetime as naive UTC, which is what Bokeh and the date pickers take."""
    return ts.astimezone(UTC).replace(tzinfo=None)


def as_text_times(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Datetime columns as 'YYYY-MM-DD HH:MM:SS' text: sorts the same, and needs no JS library."""
    frame = frame.copy()
    for col in columns:
        if col in frame:
            frame[col] = pd.to_datetime(frame[col]).dt.strftime("%Y-%m-%d %H:%M:%S").fillna("—")
    return frame


def percent(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Fractions as percentages, in place."""
    for col in columns:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce") * 100.0
    return frame


def blanks(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Missing numbers as None, which the table shows as an empty cell rather than 'NaN'."""
    for col in columns:
        if col in frame:
            values = frame[col].astype(object)
            frame[col] = values.where(values.notna(), None)
    return frame


def when(ts: Any) -> str:
    """A time as 'YYYY-MM-DD HH:MM:SS', or a dash when there is none.

    >>> when(datetime(2026, 1, 5, 8, 30, tzinfo=UTC)), when(None)
    ('2026-01-05 08:30:00', '—')
    """
    if ts is None or pd.isna(ts):
        return "—"
    return pd.Timestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


class DevicePalette:
    """One colour per device name, the same on every chart of a session.

    Names seen first get the palette in order; a name's colour never changes afterwards.

    Parameters
    ----------
    names
        Names to colour first (in sorted order, so two sessions agree).

    Examples
    --------
    >>> palette = DevicePalette(["oven", "fridge"])
    >>> palette.color("fridge") != palette.color("oven"), palette.color(None)
    (True, '#9e9e9e')
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


def message(text: str = "", kind: str = "info") -> pn.pane.Alert:
    """An alert pane that hides itself while it has nothing to say."""
    return pn.pane.Alert(text, alert_type=kind, visible=bool(text), margin=(5, 10))


def say(alert: pn.pane.Alert, text: str, kind: str = "info") -> None:
    """Show `text` in `alert` (hide it when empty)."""
    alert.object = text
    alert.alert_type = kind
    alert.visible = bool(text)


def bokeh_columns(frame: pd.DataFrame) -> dict[str, Any]:
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


def _same(a: Any, b: Any) -> bool:
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.shape != b_arr.shape:
        return False
    if a_arr.dtype.kind == "f" and b_arr.dtype.kind == "f":
        return bool(np.array_equal(a_arr, b_arr, equal_nan=True))
    return bool(np.array_equal(a_arr, b_arr))


def bokeh_edits() -> Any:
    """A context for changing plain Bokeh models (sources, ranges, renderers) from any callback.

    Panel processes a browser's widget events without Bokeh's document lock, and a plain
    model changed there raises in the server ("_pending_writes should be non-None …"), which
    aborts the rest of the callback. Panel's own widgets go through this same context.
    """
    return unlocked()


def set_data(source: ColumnDataSource, data: dict[str, Any]) -> bool:
    """Give `source` new columns if they differ from what it holds; True when it changed.

    The same source, so the same Bokeh model: the browser swaps the columns in place.
    """
    old = source.data
    if set(old) == set(data) and all(_same(old[k], data[k]) for k in data):
        return False
    source.data = data
    return True


def time_axis_formatter() -> DatetimeTickFormatter:
    """Tick labels that keep the hour on short zooms (':14' alone does not say which hour)."""
    return DatetimeTickFormatter(
        milliseconds="%H:%M:%S.%3N",
        seconds="%H:%M:%S",
        minsec="%H:%M:%S",
        minutes="%H:%M",
        hourmin="%H:%M",
        hours="%H:%M",
        days="%b %d",
        months="%b %Y",
        years="%Y",
        context=DatetimeTickFormatter(
            seconds="%b %d", minsec="%b %d", minutes="%b %d", hourmin="%b %d", hours="%b %d",
            days="", months="", years="",
        ),
    )  # fmt: skip


def event_hover(renderers: list[Any] | None = None) -> HoverTool:
    """The tooltip of an event marker: when, which device (and whether it is provisional: a
    `status` column), and its signature."""
    return HoverTool(
        renderers=renderers or "auto",
        tooltips=[
            ("time", "@ts{%F %T}"),
            ("device", "@device (confidence @confidence{0%}) @status"),
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


def device_html(palette: DevicePalette, names: pd.Series) -> list[str]:
    """Each name with its colour's dot, as HTML for a table cell."""
    return [f"<span style='color:{palette.color(n)}'>●</span> {html.escape(str(n))}" for n in names]


PROVISIONAL_BADGE = (
    " <span class='provisional' style='font-style:italic;color:#6c757d;border:1px dashed "
    "#6c757d;border-radius:4px;padding:0 4px' title='Seen seconds ago: the flow may still "
    "refine this event or find it was none'>provisional</span>"
)


def mark_provisional(cells: list[str], provisional: pd.Series) -> list[str]:
    """Table cells with a "provisional" badge on the rows of events that may still change."""
    flags = provisional.fillna(False).astype(bool).tolist() if len(provisional) else []
    return [c + PROVISIONAL_BADGE if f else c for c, f in zip(cells, flags, strict=True)]
