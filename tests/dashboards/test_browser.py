"""The dashboard in a real browser, over the real demo: `nilm demo` in a subprocess, headless
Chromium driven by Selenium.

It checks what a person would: the live chart moves, a label confirmed in the queue is stored,
and the flow then predicts that device for the events that follow; and that no page builds new
Bokeh models as it refreshes (a page that did grew its tab until it stopped answering).
Screenshots of every page go to `artifacts/dashboard/` at the repository root (git-ignored);
on a failure, a screenshot and the page's console log too.

It never hangs: each step waits on a condition with its own time limit, scripts and page
loads have timeouts, and a watchdog kills Chromium and the demo once `HARD_LIMIT_S` is over,
so a renderer that stopped answering fails the test instead of blocking it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "dashboard"
NEW_DEVICE = "Test fridge"
# The whole walk-through, on a loaded 2-core machine; past it the watchdog kills everything.
HARD_LIMIT_S = 420.0
SCRIPT_TIMEOUT_S = 20.0
# Refresh ticks (one a second) a page gets while its model count is watched, and the growth
# allowed (a Tabulator page may add a row model or two; a leaking page adds hundreds per refresh,
# so a few ticks show it).
WATCH_S = 4.0
MODEL_SLACK = 10

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
        reason="Debian's chromium and chromium-driver are not installed (make browser-deps)",
    ),
]

# Finds elements through every open shadow root (Panel renders its components in them).
DEEP = """
const sel = arguments[0];
const out = [];
const walk = (root) => {
  root.querySelectorAll(sel).forEach((e) => out.push(e));
  root.querySelectorAll('*').forEach((e) => { if (e.shadowRoot) walk(e.shadowRoot); });
};
walk(document);
return out;
"""
# The data behind the page's Bokeh models: the power chart's and the tables' columns.
SOURCES = """
const want = arguments[0];
const found = [];
if (!window.Bokeh || !Bokeh.documents.length) return found;
for (const m of Bokeh.documents[0].all_models) {
  if (m.data && want.every((k) => k in m.data)) {
    const cols = {};
    for (const k of Object.keys(m.data)) cols[k] = Array.from(m.data[k]);
    found.push(cols);
  }
}
return found;
"""


MODEL_COUNT = """
if (!window.Bokeh || !Bokeh.documents.length) return null;
return Bokeh.documents[0].all_models.size;
"""


class Watchdog:
    """Kills the processes it is given once `limit_s` has passed, unless cancelled first."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self.fired = False
        self._cancel = threading.Event()
        self._groups: list[int] = []
        self._thread = threading.Thread(target=self._run, name="browser-watchdog", daemon=True)
        self._thread.start()

    def guard(self, pid: int) -> None:
        """Watch the process group that `pid` leads."""
        self._groups.append(pid)

    def _run(self) -> None:
        if self._cancel.wait(self.limit_s):
            return
        self.fired = True
        for group in self._groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)

    def cancel(self) -> None:
        self._cancel.set()
        self._thread.join(timeout=5)


@pytest.fixture
def watchdog() -> Iterator[Watchdog]:
    dog = Watchdog(HARD_LIMIT_S)
    yield dog
    dog.cancel()
    assert not dog.fired, f"the browser test passed its hard limit of {HARD_LIMIT_S:.0f} s"


def _until(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = check()
        except Exception as err:  # the page may be mid-render
            value, last = None, err
        else:
            last = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last error: {last})")
        time.sleep(every_s)


@pytest.fixture
def demo(tmp_path: Path, watchdog: Watchdog) -> Iterator[str]:
    """`nilm demo` on a port it picks itself (`--port 0`: a port chosen here and bound later
    could be taken in between) over a new database; yields the dashboard's URL."""
    nilm = Path(sys.executable).with_name("nilm")
    command = (
        [str(nilm)]
        if nilm.exists()
        else [sys.executable, "-c", "from flows.cli import main; raise SystemExit(main())"]
    )
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen(
        [*command, "demo", "--port", "0", "--db", str(tmp_path / "demo.duckdb"),
         "--backfill-days", "0.5", "--speed", "300", "--confirm-per-device", "0"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    watchdog.guard(proc.pid)

    def up() -> str:
        text = (tmp_path / "demo.log").read_text()
        assert proc.poll() is None, text[-3000:]
        found = re.search(r"^dashboard +(http://127\.0\.0\.1:[0-9]+/)$", text, re.MULTILINE)
        if found is None:
            return ""
        with urllib.request.urlopen(found[1] + "liveness", timeout=5) as response:
            return found[1] if response.status == 200 else ""

    try:
        url = _until("nilm demo serves its dashboard", up, 90)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        text = (tmp_path / "demo.log").read_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "demo.log").write_text(text)
        # No websocket error while the page is open. When a tab closes, a refresh may be on
        # its way over the socket: Bokeh does not await tornado's failed write, so asyncio logs
        # it once ("never retrieved"); a timer that outlived its tab would log it again and
        # again. So: none before the first close, and no more than one per closed socket.
        error, closed = "Task exception was never retrieved", "WebSocket connection closed"
        first_close = text.find(closed)
        before_close = text if first_close < 0 else text[:first_close]
        assert error not in before_close, text[-3000:]
        assert text.count(error) <= text.count(closed), text[-3000:]


@pytest.fixture
def browser(watchdog: Watchdog) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1500,1100",
    ):  # fmt: skip
        options.add_argument(arg)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        # Its own process group, so the watchdog can kill chromedriver and every Chromium
        # process it started at once.
        service = Service(str(CHROMEDRIVER), popen_kw={"start_new_session": True})
        driver = webdriver.Chrome(service=service, options=options)
        watchdog.guard(service.process.pid)
        driver.set_script_timeout(SCRIPT_TIMEOUT_S)
        driver.set_page_load_timeout(60)
        try:
            yield driver
        finally:
            with contextlib.suppress(Exception):
                driver.quit()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.process.pid, signal.SIGKILL)


def _deep(driver: Any, css: str) -> list[Any]:
    return list(driver.execute_script(DEEP, css))


def _visible(driver: Any, css: str) -> list[Any]:
    """Elements on the page in sight (the other pages stay in the document, hidden)."""
    return [e for e in _deep(driver, css) if e.is_displayed()]


def _sources(driver: Any, *columns: str) -> list[dict[str, list[Any]]]:
    return list(driver.execute_script(SOURCES, list(columns)))


def _click(driver: Any, element: Any) -> None:
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
    element.click()


def _click_fresh(driver: Any, what: str, find: Callable[[], Any], timeout_s: float = 15) -> None:
    """Find an element and click it, again if the page re-rendered it in between (a refresh
    every second replaces table rows: an element found a moment ago may be stale)."""

    def click() -> bool:
        _click(driver, find())
        return True

    _until(what, click, timeout_s)


def _tab(driver: Any, title: str) -> None:
    _click_fresh(
        driver,
        f"the {title} tab is clicked",
        lambda: next(t for t in _deep(driver, ".bk-tab") if t.text.strip() == title),
    )


def _shot(driver: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def _latest_chart_ms(driver: Any) -> float:
    data = _sources(driver, "ts", "total_mean")
    return max((max(d["ts"]) for d in data if d["ts"]), default=0.0)


def _queue_rows(driver: Any) -> list[dict[str, Any]]:
    data = _sources(driver, "uncertainty", "event_id", "legs", "delta_p_w", "ts")
    if not data:
        return []
    cols = data[0]
    return [{k: cols[k][i] for k in cols} for i in range(len(cols["event_id"]))]


def _save_failure(driver: Any) -> None:
    """A screenshot and the console log of the page as it was when the test failed."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):
        _shot(driver, "failure")
    with contextlib.suppress(Exception):
        entries = driver.get_log("browser")
        (ARTIFACTS / "failure-console.json").write_text(json.dumps(entries, indent=1))


def _models_stay_bounded(driver: Any, page: str) -> None:
    """The page's Bokeh model count after several refreshes is what it was (no new figures)."""
    before = _until(f"the {page} page's Bokeh document", lambda: driver.execute_script(
        MODEL_COUNT), 20)  # fmt: skip
    deadline = time.monotonic() + WATCH_S
    counts = [before]
    while time.monotonic() < deadline:
        time.sleep(1.0)  # pacing the samples, not waiting for a state: the refreshes run anyway
        counts.append(driver.execute_script(MODEL_COUNT))
    assert max(counts) <= before + MODEL_SLACK, f"{page}: Bokeh models grew {counts}"


def test_live_chart_labelling_and_learning_in_a_browser(demo: str, browser: Any) -> None:
    try:
        _walk_through(demo, browser)
    except BaseException:
        _save_failure(browser)
        raise


def _walk_through(demo: str, browser: Any) -> None:
    started = time.monotonic()

    def took(step: str) -> None:
        print(f"{time.monotonic() - started:6.1f} s  {step}")

    browser.get(demo)

    # 1. The live chart draws, then moves on as the flow stores new readings.
    first = _until("the live chart shows power", lambda: _latest_chart_ms(browser), 45)
    _until("the live chart updates", lambda: _latest_chart_ms(browser) > first, 30)
    _shot(browser, "1-live")
    _models_stay_bounded(browser, "Live")
    took("live chart updates, its models stay put")

    # 2. The labelling queue: choose a fridge-like switch (about +95 W on leg a) and name it.
    # The demo's simulated user confirms nothing here, so the fridge, which switches every half
    # hour, is in the queue and comes again after the label.
    _tab(browser, "Label")
    rows = _until("the labelling queue fills", lambda: _queue_rows(browser)[:20], 30)
    fridge_like = [
        i for i, r in enumerate(rows) if r["legs"] == "a" and 60 <= r["delta_p_w"] <= 170
    ]
    assert fridge_like, f"no fridge-like switch among the queue's first rows: {rows}"
    pick = fridge_like[0]
    chosen = rows[pick]
    _click_fresh(
        browser,
        "the chosen queue row is clicked",
        lambda: _visible(browser, ".tabulator-row")[pick],
    )
    name_box = _until(
        "the new-device box", lambda: _visible(browser, "input[placeholder='e.g. kettle']"), 10
    )[0]
    driver_scroll = "arguments[0].scrollIntoView({block: 'center'});"
    browser.execute_script(driver_scroll, name_box)
    name_box.clear()
    name_box.send_keys(NEW_DEVICE)
    name_box.send_keys("\t")  # commit the value, as leaving the box does
    _click_fresh(
        browser,
        "the name-new-device button is clicked",
        lambda: next(b for b in _visible(browser, "button") if b.text.strip() == "Name new device"),
    )
    _until(
        "the page confirms the label",
        lambda: any("Stored:" in e.text for e in _visible(browser, ".alert-success")),
        15,
    )
    labelled = _until(
        "the chosen event leaves the queue",
        lambda: chosen["event_id"] not in {r["event_id"] for r in _queue_rows(browser)},
        15,
    )
    assert labelled
    _models_stay_bounded(browser, "Label")
    _shot(browser, "2-label")
    took(f"label stored for {chosen}")

    # 3. The event log: the flow learns the label and predicts the device for later events.
    _tab(browser, "Events")

    def predicted_later() -> list[str]:
        tables = _sources(browser, "shown_device", "confirmed", "ts", "event_id")
        if not tables:
            return []
        t = tables[0]
        return [
            t["event_id"][i]
            for i in range(len(t["event_id"]))
            if t["shown_device"][i] == NEW_DEVICE
            and not t["confirmed"][i]
            and str(t["ts"][i]) > str(chosen["ts"])
        ]

    later = _until("the flow predicts the new device for later events", predicted_later, 60, 1)
    assert later
    _models_stay_bounded(browser, "Events")
    _shot(browser, "3-events")
    took(f"{len(later)} later events predicted {NEW_DEVICE!r}")

    # 4. Click an event in the log: the chart shows the ten minutes around it.
    _click_fresh(
        browser, "an event in the log is clicked", lambda: _visible(browser, ".tabulator-row")[0]
    )

    def zoomed() -> bool:
        spans = [max(d["ts"]) - min(d["ts"]) for d in _sources(browser, "ts", "total_mean")]
        active = [t.text.strip() for t in _deep(browser, ".bk-tab.bk-active")]
        return active == ["Live"] and bool(spans) and 0 < spans[0] <= 10 * 60 * 1000

    _until("clicking an event zooms the live chart to it", zoomed, 15)
    _shot(browser, "4-zoomed-to-event")
    took("zoomed to an event")

    # 5. The other pages render with the demo's data.
    _tab(browser, "Devices")
    _until("the devices page draws", lambda: _visible(browser, ".bk-Canvas"), 15)
    _until(
        "the devices table lists devices",
        lambda: any(s["device"] for s in _sources(browser, "kwh", "device", "share")),
        20,
    )
    _shot(browser, "5-devices")
    _models_stay_bounded(browser, "Devices")
    took("devices page")
    _tab(browser, "Unknowns & health")
    _until(
        "the unknowns and health page draws",
        lambda: (
            {"Health alerts", "Unknown devices"}
            <= {h.text.strip() for h in _visible(browser, "h3")}
        ),
        20,
    )
    _until("its tables fill in", lambda: _visible(browser, ".tabulator-row"), 15)
    _models_stay_bounded(browser, "Unknowns & health")
    _shot(browser, "6-unknowns-health")
    took("every page shown")
    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon" not in entry["message"]
    ]
    assert errors == []
    with contextlib.suppress(Exception):
        browser.execute_script("window.close()")
