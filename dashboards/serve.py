"""Serving the dashboard: in the process that owns the database, or read-only over a file.

DuckDB lets one process open a file, so `nilm run` and `nilm demo` serve the dashboard from the
process that runs the flow (`start_dashboard` with the flow's connection), and `nilm dashboard`
(`run_dashboard_command`) opens a file read-only only when no flow holds it; when one does, it
says which URL to open instead.

Access: the dashboard binds 127.0.0.1 by default. It refuses any other address unless
`settings.dashboard_token` is set, and then it asks for that token as a password: Panel's basic
auth (a login page, then a signed cookie), so every page and its websocket need it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import panel as pn

from dashboards.store import DataStore, FleetStore
from nilm.settings import Settings, load_settings

__all__ = [
    "DashboardHandle",
    "DashboardRefused",
    "is_loopback",
    "run_dashboard_command",
    "sidecar_path",
    "start_dashboard",
]

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 20.0
# BokehJS parts the pages never use: MathJax (1.8 MB: Panel adds it to any page with an HTML
# pane, in case the text holds LaTeX; ours never does) and WebGL (no figure draws with it; it
# opens a software GL context on load). Every first paint downloads and runs what is left.
UNUSED_BOKEH_JS = ("bokeh-mathjax", "bokeh-gl")


class DashboardRefused(ValueError):
    """The dashboard will not start as asked; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable only from this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sidecar_path(db_path: str | Path) -> Path:
    """Where the process that owns `db_path` notes its dashboard's URL for `nilm dashboard`."""
    return Path(str(db_path) + ".dashboard.json")


@dataclasses.dataclass
class DashboardHandle:
    """A running dashboard: open `url`; `stop()` shuts the server down (idempotent)."""

    url: str
    host: str
    port: int
    store: DataStore
    _thread: Any
    _sidecars: list[Path] = dataclasses.field(default_factory=list)
    _stopped: bool = False
    fleet: FleetStore | None = None

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self._thread.stop()
        except Exception:  # pragma: no cover - a server that failed to start
            log.debug("stopping the dashboard server", exc_info=True)
        self._thread.join(timeout=10)
        self.store.close()
        if self.fleet is not None:
            self.fleet.close()
        for sidecar in self._sidecars:
            with contextlib.suppress(OSError):
                sidecar.unlink()
        log.info("dashboard at %s stopped", self.url)

    def __enter__(self) -> DashboardHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as err:
            raise DashboardRefused(
                f"cannot serve the dashboard on {host}:{port}: {err.strerror or err}. "
                "Is another dashboard running there? Pick another port with --port."
            ) from err


def _wait_until_listening(host: str, port: int, thread: threading.Thread) -> None:
    connect_host = _connect_host(host)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise DashboardRefused(f"the dashboard server on {host}:{port} stopped at start")
        try:
            with socket.create_connection((connect_host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise DashboardRefused(
        f"the dashboard server on {host}:{port} did not start in {_START_TIMEOUT_S:.0f} s"
    )


def _database_path(connection: duckdb.DuckDBPyConnection) -> str | None:
    row = (
        connection.cursor()
        .execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()")
        .fetchone()
    )
    return None if row is None or not row[0] else str(row[0])


def _pick_home(connection: duckdb.DuckDBPyConnection, preferred: str) -> str | None:
    """The settings' home if the database has it or is empty; else None (the store picks)."""
    cur = connection.cursor()
    try:
        row = cur.execute(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM readings WHERE home_id = $h LIMIT 1)), "
            "(SELECT count(*) FROM (SELECT 1 FROM readings LIMIT 1))",
            {"h": preferred},
        ).fetchone()
    finally:
        cur.close()
    if row is None or row[0] or not row[1]:
        return preferred
    return None


def start_dashboard(
    connection: duckdb.DuckDBPyConnection | Sequence[duckdb.DuckDBPyConnection],
    settings: Settings,
    read_only: bool = False,
    app_factory: Callable[[DataStore], Any] | None = None,
) -> DashboardHandle:
    """Serve the dashboard in this process, in a thread of its own; returns at once.

    Parameters
    ----------
    connection
        This process's DuckDB connection, or one per file of a fleet (its shards, in order:
        the page then has a home picker over every home of every file); the dashboard takes a
        cursor of each per thread.
    settings
        `dashboard_host` (127.0.0.1 by default; another address needs `dashboard_token`),
        `dashboard_port` (0 picks a free port), `dashboard_token`, `home_id`.
    read_only
        The labelling controls say why they cannot store labels (for `nilm dashboard`).
    app_factory
        Builds one session's page from the store; the full app by default.

    Raises `DashboardRefused` when the address is not allowed or the port is taken.
    """
    host = settings.dashboard_host or "127.0.0.1"
    token = settings.dashboard_token
    if not is_loopback(host) and not token:
        raise DashboardRefused(
            f"refusing to serve the dashboard on {host}: anyone on the network could read it and "
            "change labels. Set a password with NILM_DASHBOARD_TOKEN (or dashboard_token in the "
            "config file), or bind 127.0.0.1."
        )
    port = settings.dashboard_port or _free_port(host)
    _check_port(host, port)

    connections = (
        [connection] if isinstance(connection, duckdb.DuckDBPyConnection) else list(connection)
    )
    fleet: FleetStore | None = None
    if len(connections) == 1:
        store = DataStore(connections[0], home_id=_pick_home(connections[0], settings.home_id))
    else:
        fleet = FleetStore(connections, preferred=settings.home_id)
        store = fleet.store()

    def session() -> Any:
        if app_factory is not None:
            return app_factory(store)
        from dashboards.app import build_app

        if fleet is not None:
            return build_app(fleet, read_only=read_only or fleet.read_only)
        return build_app(store, read_only=read_only or store.read_only)

    origins = (
        [f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
        if is_loopback(host)
        else [f"*:{port}"]
    )
    auth: dict[str, Any] = {}
    server_id = secrets.token_hex(16)
    if token:
        auth = {"basic_auth": token, "cookie_secret": secrets.token_hex(32)}
    title = "Home energy"  # the browser tab's; Panel sets it per server, not per session
    if app_factory is None:
        from dashboards.app import page_title

        homes = fleet.homes() if fleet is not None else [store.home_id]
        title = page_title(homes, store.home_id, read_only or store.read_only)
    thread = pn.serve(
        session,
        port=port,
        address=host,
        websocket_origin=origins,
        show=False,
        threaded=True,
        verbose=False,
        title=title,
        # GET /liveness answers without building a session: what a readiness check should
        # ask, since every GET / builds a whole page (and a check that times out and asks
        # again piles up page builds on a busy machine).
        liveness=True,
        server_id=server_id,
        **auth,
    )
    try:
        _wait_until_listening(host, port, thread)
        _serve_light_pages(server_id)
    except DashboardRefused:
        with contextlib.suppress(Exception):
            thread.stop()
        store.close()
        if fleet is not None:
            fleet.close()
        raise
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/"
    if not token:  # behind a password, GET / is the login page: nothing to warm
        _warm_up(_connect_url(host, port))
    # Panel runs a full garbage collection whenever a session ends (a tab closed, a page
    # reloaded): in a process holding a flow, its models and every imported module, that took
    # ~0.5 s with the GIL held, in the middle of the next page's first paint. What exists by now
    # lives as long as the process: move it out of the collector's sight (0.5 s -> 0.2 ms).
    gc.freeze()
    sidecars = []
    for con in connections:
        db_path = _database_path(con)
        if not db_path or read_only or store.read_only:
            continue
        sidecar = sidecar_path(db_path)
        try:
            sidecar.write_text(json.dumps({"url": url, "pid": os.getpid()}))
            sidecars.append(sidecar)
        except OSError:
            log.warning("could not write %s; 'nilm dashboard' will not know this URL", sidecar)
    log.info("dashboard at %s%s", url, " (password required)" if token else "")
    return DashboardHandle(url, host, port, store, thread, sidecars, fleet=fleet)


def _connect_host(host: str) -> str:
    """The address to reach a server bound to `host` from this machine."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


def _connect_url(host: str, port: int) -> str:
    connect_host = _connect_host(host)
    shown = f"[{connect_host}]" if ":" in connect_host else connect_host
    return f"http://{shown}:{port}/"


def _warm_up(url: str) -> None:
    """Ask for one page before anyone does, so that the first visitor does not wait for it.

    A process's first page took twice as long to build as the next ones (modules Panel and
    Bokeh import on first use, the store's first queries, caches of model properties). Its
    session expires unused; its refresh timer never starts, since no browser loads it.
    """
    import urllib.request

    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=_START_TIMEOUT_S) as response:
            response.read()
    except OSError as err:  # a cold first page is slower, not broken: serve on
        log.warning("warming up the dashboard at %s failed: %s", url, err)
        return
    log.debug("dashboard warmed up in %.2f s", time.perf_counter() - t0)


def _serve_light_pages(server_id: str) -> None:
    """Leave `UNUSED_BOKEH_JS` out of every page the server `server_id` renders."""
    servers = getattr(pn.state, "_servers", {})
    # The socket listens a moment before Panel notes its server: wait for the note.
    deadline = time.monotonic() + _START_TIMEOUT_S
    while server_id not in servers and time.monotonic() < deadline:
        time.sleep(0.01)
    if server_id not in servers:  # pragma: no cover - a Panel that keeps its servers elsewhere
        log.warning("serving the full BokehJS bundle: Panel's server %s is not known", server_id)
        return
    app = servers[server_id][0]._tornado
    full = app.resources

    def resources(absolute_url: Any = None) -> Any:
        bundle = full(absolute_url)
        return bundle.clone(components=[c for c in bundle.components if c not in UNUSED_BOKEH_JS])

    app.resources = resources


def _owner_url(db_path: Path) -> str | None:
    """The URL the owning process noted beside the file, if that process still runs."""
    try:
        note = json.loads(sidecar_path(db_path).read_text())
        os.kill(int(note["pid"]), 0)
        return str(note["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_dashboard_command(
    db_path: str | Path | Sequence[str | Path],
    host: str = "127.0.0.1",
    port: int = 5006,
    settings: Settings | None = None,
    wait: Callable[[DashboardHandle], None] | None = None,
) -> int:
    """`nilm dashboard --db DB... [--port P]`: browse databases no flow is running on.

    Several files (a fleet's shards) are shown together, with a home picker. Opens every file
    read-only and serves until interrupted (or until `wait(handle)` returns). Returns 0 after
    serving; 2 when a file is missing or the address is refused; 3 when a flow holds a file,
    after saying which URL to open instead.
    """
    paths = [Path(db_path)] if isinstance(db_path, str | Path) else [Path(p) for p in db_path]
    settings = settings or load_settings()
    settings = dataclasses.replace(
        settings, dashboard_host=host, dashboard_port=port, db_path=str(paths[0])
    )
    connections: list[duckdb.DuckDBPyConnection] = []
    try:
        for path in paths:
            code = _open_read_only(path, connections)
            if code:
                return code
        return _serve_read_only(connections, settings, wait)
    finally:
        for con in connections:
            con.close()


def _open_read_only(path: Path, opened: list[duckdb.DuckDBPyConnection]) -> int:
    """Opens `path` read-only into `opened`; else says why and returns the exit code."""
    if not path.exists():
        print(
            f"nilm dashboard: no database at {path}. Create one with 'nilm demo --db {path}' "
            f"or 'nilm replay FILE --db {path}'.",
            file=sys.stderr,
        )
        return 2
    try:
        opened.append(duckdb.connect(str(path), read_only=True))
    except duckdb.IOException as err:
        if "lock" not in str(err).lower():
            print(f"nilm dashboard: cannot open {path}: {err}", file=sys.stderr)
            return 2
        url = _owner_url(path)
        where = (
            f"Open its dashboard instead: {url}"
            if url
            else "Open that process's dashboard instead: http://127.0.0.1:5006/ by default "
            "(or the --port it was started with)."
        )
        print(
            f"nilm dashboard: {path} is in use by a running flow ('nilm run' or 'nilm demo'), "
            f"and DuckDB lets only one process open a file. {where}",
            file=sys.stderr,
        )
        return 3
    return 0


def _serve_read_only(
    connections: list[duckdb.DuckDBPyConnection],
    settings: Settings,
    wait: Callable[[DashboardHandle], None] | None,
) -> int:
    try:
        handle = start_dashboard(connections, settings, read_only=True)
    except DashboardRefused as err:
        print(f"nilm dashboard: {err}", file=sys.stderr)
        return 2
    print(f"Dashboard (read-only) on {handle.url} — Ctrl-C stops it.", flush=True)
    stop = threading.Event()
    previous: dict[int, Any] = {}
    if wait is None and threading.current_thread() is threading.main_thread():
        # Set explicitly: a shell starts background jobs with SIGINT ignored.
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        if wait is not None:
            wait(handle)
        else:
            stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        handle.stop()
    return 0
