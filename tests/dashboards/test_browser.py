"""The dashboard in a real browser, over the real demo: `nilm demo` in a subprocess, headless
Chromium driven by Selenium.

It checks what a person would: the live chart moves, a label confirmed in the queue is stored,
and the flow then predicts that device for the events that follow. Screenshots of every page go
to `artifacts/dashboard/` at the repository root (git-ignored).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import tempfile
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
def demo(tmp_path: Path) -> Iterator[str]:
    """`nilm demo` on a free port over a new database; yields the dashboard's URL."""
    port = _free_port()
    nilm = Path(sys.executable).with_name("nilm")
    command = (
        [str(nilm)]
        if nilm.exists()
        else [sys.executable, "-c", "from flows.cli import main; raise SystemExit(main())"]
    )
    log = (tmp_path / "demo.log").open("w")
    proc = subprocess.Popen(
        [*command, "demo", "--port", str(port), "--db", str(tmp_path / "demo.duckdb"),
         "--backfill-days", "0.5", "--speed", "300"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)

    try:
        _until("nilm demo serves its dashboard", up, 60)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1500,1100",
    ):  # fmt: skip
        options.add_argument(arg)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield driver
        finally:
            driver.quit()


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


def _tab(driver: Any, title: str) -> None:
    tab = next(t for t in _deep(driver, ".bk-tab") if t.text.strip() == title)
    _click(driver, tab)


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


def test_live_chart_labelling_and_learning_in_a_browser(demo: str, browser: Any) -> None:
    try:
        _walk_through(demo, browser)
    except BaseException:
        _shot(browser, "failure")
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
    took("live chart updates")

    # 2. The labelling queue: choose a fridge-like switch (about +125 W on leg a) and name it.
    _tab(browser, "Label")
    rows = _until("the labelling queue fills", lambda: _queue_rows(browser)[:10], 30)
    pick = next(
        (i for i, r in enumerate(rows) if r["legs"] == "a" and 100 <= r["delta_p_w"] <= 170),
        0,
    )
    chosen = rows[pick]
    table_rows = _until("the queue's rows render", lambda: _visible(browser, ".tabulator-row"), 15)
    _click(browser, table_rows[pick])
    name_box = _until(
        "the new-device box", lambda: _visible(browser, "input[placeholder='e.g. kettle']"), 10
    )[0]
    driver_scroll = "arguments[0].scrollIntoView({block: 'center'});"
    browser.execute_script(driver_scroll, name_box)
    name_box.clear()
    name_box.send_keys(NEW_DEVICE)
    name_box.send_keys("\t")  # commit the value, as leaving the box does
    button = next(b for b in _visible(browser, "button") if b.text.strip() == "Name new device")
    _click(browser, button)
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
    _shot(browser, "3-events")
    took(f"{len(later)} later events predicted {NEW_DEVICE!r}")

    # 4. Click an event in the log: the chart shows the ten minutes around it.
    rows = _until("the event log's rows render", lambda: _visible(browser, ".tabulator-row"), 15)
    _click(browser, rows[0])

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
