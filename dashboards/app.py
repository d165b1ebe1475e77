"""App assembly: one page with a tab per view, refreshed every couple of seconds.

`build_app(store)` builds one browser session's page; `dashboards.serve` serves it from the
process that owns the database. Over a fleet (a `FleetStore` of one or more files) the page has a
home picker when there is more than one home, and every page shows the picked home. Under
`panel serve dashboards/app.py` (set `NILM_DB_PATH`, several files separated by `:`) the module
serves the file(s) read-only itself; importing it does nothing, so tests can.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import panel as pn

from dashboards.devices import DevicesView
from dashboards.events import EventLog
from dashboards.health import HealthView
from dashboards.label import LabellingQueue
from dashboards.live import LivePowerView
from dashboards.store import DataStore, FleetStore
from dashboards.unknowns import UnknownsView
from dashboards.widgets import LIVE_WINDOWS, DevicePalette, Selection

__all__ = ["PAGES", "DashboardApp", "build_app", "page_title"]

log = logging.getLogger(__name__)

PAGES = ("Live", "Events", "Label", "Devices", "Unknowns & health")
# The Live page follows every second (a new event's marker within a second or two of its row);
# the other pages every `SLOW_EVERY` ticks.
REFRESH_MS = 1000
SLOW_EVERY = 2
HOMES_EVERY = 30
HEADER_BACKGROUND = "#1f3b73"

pn.extension("tabulator", design="bootstrap", notifications=False)


def page_title(homes: list[str], home_id: str, read_only: bool) -> str:
    """The page's title: the home (or how many), and whether labels can be stored.

    >>> page_title(["oak-1"], "oak-1", True), page_title(["a", "b"], "a", False)
    ('Home energy · oak-1 · read-only', 'Home energy · 2 homes')
    """
    title = f"Home energy · {home_id}" if len(homes) <= 1 else f"Home energy · {len(homes)} homes"
    return title + (" · read-only" if read_only else "")


class DashboardApp:
    """The views of one session, the tabs that hold them and their periodic refresh."""

    def __init__(
        self,
        store: DataStore | FleetStore,
        read_only: bool = False,
        window: str = "1 h",
        home: str | None = None,
    ) -> None:
        self.fleet = store if isinstance(store, FleetStore) else None
        if isinstance(store, FleetStore):
            homes = store.homes()
            store = store.store(home if home in homes else None)
        else:
            homes = [store.home_id]
        self.store = store
        self.read_only = read_only
        self.selection = Selection()
        self.palette = DevicePalette(store.device_names())
        self.live = LivePowerView(store, self.palette, self.selection, window=window)
        # Only a fleet of more than one home has a picker; switching rebuilds the views over
        # the picked home's store (each view holds its store), so no page shows the old home.
        self.home_picker = pn.widgets.Select(
            label="Home", options=homes, value=store.home_id, width=220,
            visible=len(homes) > 1,
        )  # fmt: skip
        self.home_picker.param.watch(self._home_picked, "value")
        # The other pages are built when first opened: a first load draws the live chart only.
        self._views: dict[str, Any] = {}
        self._slots = {page: pn.Column(sizing_mode="stretch_width") for page in PAGES[1:]}
        self.tabs = pn.Tabs(
            ("Live", self.live),
            *((page, self._slots[page]) for page in PAGES[1:]),
            dynamic=False,  # every page stays rendered once built: no re-render, no lost zoom
            sizing_mode="stretch_width",
        )
        self.selection.param.watch(self._go_to_page, "page")
        self.tabs.param.watch(self._page_opened, "active")
        self.title = title = page_title(homes, store.home_id, read_only)
        # A plain column, not one of Panel's templates: a BootstrapTemplate took as long to put
        # in a session's document as the Live page itself, and brought Bootstrap's own script
        # and stylesheet (300 kB) to every first paint, for a header and an unused sidebar.
        self.header = pn.Row(
            pn.pane.HTML(
                f"<span style='color:white;font-size:1.35rem'>{html.escape(title)}</span>",
                margin=(12, 20),
            ),
            pn.Spacer(),
            self.home_picker,
            styles={"background": HEADER_BACKGROUND, "color": "white"},
            sizing_mode="stretch_width",
            margin=0,
        )
        self.page = pn.Column(self.header, self.tabs, sizing_mode="stretch_width", margin=0)
        self._callback: Any = None
        self._session_context: Any = None
        self._ticks = 0

    def show_home(self, home_id: str) -> None:
        """Show `home_id` on every page (what picking it does)."""
        if self.fleet is None or home_id == self.store.home_id:
            return
        self.store = self.fleet.store(home_id)
        self.palette = DevicePalette(self.store.device_names())
        self.live = LivePowerView(
            self.store, self.palette, self.selection, window=self.live.window.value
        )
        self._views = {}
        for slot in self._slots.values():
            slot.objects = []
        self.tabs[0] = ("Live", self.live)
        if self.home_picker.value != home_id:
            self.home_picker.value = home_id
        self._fill(PAGES[self.tabs.active])

    def _home_picked(self, event: Any) -> None:
        try:
            self.show_home(event.new)
        except Exception:  # a failed switch must not kill the session
            log.exception("showing home %s", event.new)

    def _update_homes(self) -> None:
        if self.fleet is None:
            return
        homes = self.fleet.homes()
        if self.store.home_id not in homes:
            homes = sorted([*homes, self.store.home_id])
        if homes != list(self.home_picker.options):
            self.home_picker.options = homes
            self.home_picker.visible = len(homes) > 1

    def _view(self, name: str) -> Any:
        if name not in self._views:
            store, palette, selection = self.store, self.palette, self.selection
            if name == "events":
                view: Any = EventLog(store, selection, palette)
            elif name == "queue":
                view = LabellingQueue(store, self.read_only, palette, on_label=self._labelled)
            elif name == "devices":
                view = DevicesView(store, palette)
            elif name == "unknowns":
                view = UnknownsView(store, self.read_only, selection, on_label=self._labelled)
            else:
                view = HealthView(store)
            self._views[name] = view
        return self._views[name]

    @property
    def events(self) -> EventLog:
        return self._view("events")  # type: ignore[no-any-return]

    @property
    def queue(self) -> LabellingQueue:
        return self._view("queue")  # type: ignore[no-any-return]

    @property
    def devices(self) -> DevicesView:
        return self._view("devices")  # type: ignore[no-any-return]

    @property
    def unknowns(self) -> UnknownsView:
        return self._view("unknowns")  # type: ignore[no-any-return]

    @property
    def health(self) -> HealthView:
        return self._view("health")  # type: ignore[no-any-return]

    def _fill(self, page: str) -> bool:
        """Put a page's views in its tab if they are not there yet; True if it was built now."""
        slot = self._slots.get(page)
        if slot is None or slot.objects:
            return False
        views = {
            "Events": lambda: [self.events],
            "Label": lambda: [self.queue],
            "Devices": lambda: [self.devices],
            "Unknowns & health": lambda: [self.health, self.unknowns],
        }[page]
        try:
            slot.objects = views()
        except Exception as err:  # one page failing must not take the others with it
            log.exception("building the %s page", page)
            slot.objects = [
                pn.pane.Alert(
                    f"The {page} page could not be shown: {type(err).__name__}: {err}. "
                    "The other pages still work; the server log has the details.",
                    alert_type="danger",
                )
            ]
        return True

    def _go_to_page(self, event: Any) -> None:
        if event.new in PAGES:
            self.tabs.active = PAGES.index(event.new)
        self.selection.page = ""

    def _page_opened(self, event: Any) -> None:
        page = PAGES[event.new]
        if self._fill(page):
            return  # just built: its data is fresh
        if page == "Label":
            self.queue.reload()  # the queue only moves when its page is opened, or on request
        else:
            self.refresh()

    def _labelled(self) -> None:
        if "events" in self._views:
            self.events.refresh()

    def tick(self) -> None:
        """One beat of the session's timer: the Live page every beat, the others less often;
        nothing while no browser is connected."""
        if not self.browser_connected():
            return
        self._ticks += 1
        if PAGES[self.tabs.active] == "Live" or self._ticks % SLOW_EVERY == 0:
            self.refresh()
        if self._ticks % HOMES_EVERY == 0:  # a home that joins the fleet shows in the picker
            try:
                self._update_homes()
            except Exception:
                log.exception("listing the homes")

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
        """Refresh every `REFRESH_MS` once the browser has drawn the page, until the session ends.

        Only inside a served session. The timer waits for the page's load: its first ticks
        would otherwise compete with sending the page itself, and a session whose page never
        loads (a health check's `GET /`) would query the database every second until it expires.
        """
        if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
            self._session_context = pn.state.curdoc.session_context
            pn.state.onload(self._start_timer)
            # A refresh that pushes to a tab already closed fails in the websocket, and
            # asyncio logs it as "Task exception was never retrieved": stop with the session.
            pn.state.curdoc.on_session_destroyed(lambda context: self.stop())

    def browser_connected(self) -> bool:
        """Whether a browser holds the session's websocket (True outside a served session).

        A closed or reloaded tab's session lives on until Bokeh's unused-session check (15-30
        s): its timer kept querying and pushing to nobody, and six tabs closed in a minute
        doubled the demo's CPU.
        """
        session = getattr(self._session_context, "session", None)
        return session is None or session.connection_count > 0

    def _start_timer(self) -> None:
        if self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.tick, period=REFRESH_MS)

    def stop(self) -> None:
        """Stop the session's timer (idempotent)."""
        callback, self._callback = self._callback, None
        if callback is not None:
            try:
                callback.stop()
            except Exception:  # a timer already gone with its session
                log.debug("stopping the refresh timer", exc_info=True)


def _url_arg(name: str) -> str | None:
    """A query argument of the page's URL (`?window=7%20days&page=Devices`), if served."""
    args = pn.state.session_args if pn.state.curdoc is not None else {}
    values = args.get(name) if args else None
    return values[0].decode(errors="replace") if values else None


def build_app(
    store: DataStore | FleetStore,
    read_only: bool = False,
    window: str = "1 h",
    page: str = "Live",
    home: str | None = None,
) -> pn.Column:
    """One session's page over `store` (one home, or a fleet's); refreshes itself when served.

    The page's URL may choose the live window (`?window=30 days`), the page (`?page=Devices`)
    and the home (`?home=oak-12`); they override `window`, `page` and `home`.
    """
    asked = _url_arg("window")
    window = asked if asked in LIVE_WINDOWS else window
    home = _url_arg("home") or home
    app = DashboardApp(store, read_only, window=window, home=home)
    asked = _url_arg("page")
    page = asked if asked in PAGES else page
    if page != "Live":
        app.tabs.active = PAGES.index(page)
    app.start()
    page = app.page
    page._nilm_app = app  # so a test or a debugger can reach the views
    return page


def _served_app() -> Any:  # pragma: no cover - only under `panel serve`
    import os

    import duckdb

    # Several files (a fleet's shards) are separated like PATH: a.duckdb:b.duckdb.
    paths = os.environ.get("NILM_DB_PATH", "nilm.duckdb").split(os.pathsep)
    store = pn.state.as_cached(
        "nilm-store",
        lambda: FleetStore([duckdb.connect(p, read_only=True) for p in paths]),
    )
    return build_app(store, read_only=True)


if pn.state.served:  # pragma: no cover
    _page = _served_app()
    _page.servable(title=_page._nilm_app.title)
