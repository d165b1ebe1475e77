"""Serving: in-process server, loopback by default, a password elsewhere, read-only browsing."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import pytest

from dashboards.serve import (
    DashboardHandle,
    DashboardRefused,
    run_dashboard_command,
    sidecar_path,
    start_dashboard,
)
from dashboards.store import DataStore
from nilm.settings import Settings

SETTINGS = Settings(dashboard_port=0)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_serves_the_page_and_notes_its_url_beside_the_file(flow_copy: Path) -> None:
    con = duckdb.connect(str(flow_copy))
    handle = start_dashboard(con, SETTINGS)
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        status, page = _get(handle.url)
        assert status == 200 and "Home energy" in page
        note = json.loads(sidecar_path(flow_copy).read_text())
        assert note == {"url": handle.url, "pid": os.getpid()}
    finally:
        handle.stop()
        con.close()
    assert not sidecar_path(flow_copy).exists()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(handle.url, timeout=5)


def test_a_warmed_up_page_loads_only_the_bokehjs_it_uses_and_no_timer_before_it_is_drawn(
    flow_copy: Path,
) -> None:
    from dashboards.app import build_app

    built: list[Any] = []

    def session(store: DataStore) -> Any:
        built.append(build_app(store))
        return built[-1]

    con = duckdb.connect(str(flow_copy))
    handle = start_dashboard(con, SETTINGS, app_factory=session)
    try:
        assert len(built) == 1  # the server built a page before anyone asked: the slow first
        status, page = _get(handle.url)
        assert status == 200 and "bokeh.min.js" in page and "bokeh-tables.min.js" in page
        assert "bokeh-widgets.min.js" in page
        assert "bokeh-mathjax" not in page and "bokeh-gl" not in page
        # no browser loaded the pages: their sessions never start querying every second
        assert len(built) == 2 and all(p._nilm_app._callback is None for p in built)
        # objects older than the server are out of the full collection Panel runs per session
        assert gc.get_freeze_count() > 0
    finally:
        handle.stop()
        con.close()


def test_a_session_whose_browser_left_stops_refreshing(flow_copy: Path) -> None:
    from bokeh.client import pull_session

    from dashboards.app import build_app

    built: list[Any] = []

    def session(store: DataStore) -> Any:
        built.append(build_app(store))
        return built[-1]

    con = duckdb.connect(str(flow_copy))
    handle = start_dashboard(con, SETTINGS, app_factory=session)
    try:
        with pull_session(url=handle.url) as client:  # a websocket, as a browser holds one
            app = built[-1]._nilm_app
            assert client.connected and app.browser_connected()
            app.tick()
            assert app._ticks == 1
        # the server hears the close on its own loop: wait for it, with a limit
        deadline = time.monotonic() + 20
        while app.browser_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not app.browser_connected()
        app.tick()
        assert app._ticks == 1  # the closed tab's session no longer queries or pushes
    finally:
        handle.stop()
        con.close()


def test_refuses_a_public_address_without_a_token() -> None:
    con = duckdb.connect()
    with pytest.raises(DashboardRefused, match="NILM_DASHBOARD_TOKEN"):
        start_dashboard(con, replace(SETTINGS, dashboard_host="0.0.0.0"))


def test_a_token_puts_the_page_behind_a_login(flow_copy: Path) -> None:
    con = duckdb.connect(str(flow_copy))
    handle = start_dashboard(con, replace(SETTINGS, dashboard_token="s3cret"))
    try:
        status, page = _get(handle.url)
        assert "Home energy" not in page  # the app itself is not served
        assert status in (200, 401, 403) and "password" in page.lower()
    finally:
        handle.stop()
        con.close()


def test_a_port_in_use_is_refused_plainly(flow_copy: Path) -> None:
    con = duckdb.connect(str(flow_copy))
    first = start_dashboard(con, SETTINGS)
    try:
        with pytest.raises(DashboardRefused, match="--port"):
            start_dashboard(con, replace(SETTINGS, dashboard_port=first.port))
    finally:
        first.stop()
        con.close()


def test_dashboard_command_browses_a_file_read_only(
    flow_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, object] = {}

    def visit(handle: DashboardHandle) -> None:
        seen["status"], _ = _get(handle.url)
        seen["read_only"] = handle.store.read_only

    assert run_dashboard_command(flow_copy, port=0, settings=SETTINGS, wait=visit) == 0
    assert seen == {"status": 200, "read_only": True}
    assert "read-only" in capsys.readouterr().out
    assert not sidecar_path(flow_copy).exists()  # a read-only viewer notes nothing


def test_dashboard_command_on_a_missing_file_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_dashboard_command(tmp_path / "none.duckdb", settings=SETTINGS) == 2
    assert "nilm demo --db" in capsys.readouterr().err


def test_dashboard_command_names_the_running_flows_url(
    flow_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('open', flush=True); "
         "sys.stdin.read()", str(flow_copy)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        sidecar_path(flow_copy).write_text(
            json.dumps({"url": "http://127.0.0.1:5999/", "pid": holder.pid})
        )
        assert run_dashboard_command(flow_copy, port=0, settings=SETTINGS) == 3
        err = capsys.readouterr().err
        assert "in use by a running flow" in err and "http://127.0.0.1:5999/" in err
        sidecar_path(flow_copy).unlink()
        assert run_dashboard_command(flow_copy, port=0, settings=SETTINGS) == 3
        assert "http://127.0.0.1:5006/ by default" in capsys.readouterr().err
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=20)
