"""App assembly: one page with a tab per view, refreshed every couple of seconds.

`build_app(store)` builds one browser session's page; `dashboards.serve` serves it from the
process that owns the database. Under `panel serve dashboards/app.py` (set `NILM_DB_PATH`) the
module serves a file read-only itself; importing it does nothing, so tests can.
"""

from __future__ import annotations

import logging
from typing import Any

import panel as pn

from dashboards.store import DataStore
from dashboards.views import (
    DevicePalette,
    DevicesView,
    EventLog,
    HealthView,
    LabellingQueue,
    LivePowerView,
    Selection,
    UnknownsView,
)

__all__ = ["PAGES", "DashboardApp", "build_app"]

log = logging.getLogger(__name__)

PAGES = ("Live", "Events", "Label", "Devices", "Unknowns & health")
REFRESH_MS = 2000

pn.extension("tabulator", design="bootstrap", notifications=False)


class DashboardApp:
    """The views of one session, the tabs that hold them and their periodic refresh."""

    def __init__(self, store: DataStore, read_only: bool = False) -> None:
        self.store = store
        self.selection = Selection()
        self.palette = DevicePalette(store.device_names())
        self.live = LivePowerView(store, self.palette, self.selection)
        self.events = EventLog(store, self.selection, self.palette)
        self.queue = LabellingQueue(store, read_only, self.palette, on_label=self._labelled)
        self.devices = DevicesView(store, self.palette)
        self.unknowns = UnknownsView(store, read_only, self.selection, on_label=self._labelled)
        self.health = HealthView(store)
        self.tabs = pn.Tabs(
            ("Live", self.live),
            ("Events", self.events),
            ("Label", self.queue),
            ("Devices", self.devices),
            ("Unknowns & health", pn.Column(self.health, self.unknowns)),
            dynamic=True,
            sizing_mode="stretch_width",
        )
        self.selection.param.watch(self._go_to_page, "page")
        self.tabs.param.watch(self._page_opened, "active")
        title = f"Home energy · {store.home_id}" + (" · read-only" if read_only else "")
        self.template = pn.template.BootstrapTemplate(
            title=title, main=[self.tabs], header_background="#1f3b73", collapsed_sidebar=True
        )
        self._callback: Any = None

    def _go_to_page(self, event: Any) -> None:
        if event.new in PAGES:
            self.tabs.active = PAGES.index(event.new)
        self.selection.page = ""

    def _page_opened(self, event: Any) -> None:
        if PAGES[event.new] == "Label":
            self.queue.reload()  # the queue only moves when its page is opened, or on request
        else:
            self.refresh()

    def _labelled(self) -> None:
        self.events.refresh()

    def refresh(self) -> None:
        """Refresh the page in sight (and the live figure, which the header shows)."""
        page = PAGES[self.tabs.active]
        try:
            if page == "Live":
                if self.live.live.value:
                    self.live.refresh()
            elif page == "Events":
                self.events.refresh()
            elif page == "Label":
                self.queue.refresh()
            elif page == "Devices":
                self.devices.refresh()
            else:
                self.health.refresh()
                self.unknowns.refresh()
        except Exception:  # a refresh must never kill the session's timer
            log.exception("refreshing the %s page", page)

    def start(self) -> None:
        """Refresh every `REFRESH_MS` while the session lasts (only inside a served session)."""
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            self._callback = pn.state.add_periodic_callback(self.refresh, period=REFRESH_MS)


def build_app(store: DataStore, read_only: bool = False) -> pn.template.BootstrapTemplate:
    """One session's page over `store`; refreshes itself when served."""
    app = DashboardApp(store, read_only)
    app.start()
    template = app.template
    template._nilm_app = app  # so a test or a debugger can reach the views
    return template


def _served_app() -> Any:  # pragma: no cover - only under `panel serve`
    import os

    import duckdb

    path = os.environ.get("NILM_DB_PATH", "nilm.duckdb")
    store = pn.state.as_cached(
        "nilm-store", lambda: DataStore(duckdb.connect(path, read_only=True))
    )
    return build_app(store, read_only=True)


if pn.state.served:  # pragma: no cover
    _served_app().servable()
