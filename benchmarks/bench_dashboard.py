"""Dashboard and demo: CPU of the demo, first paint, page memory over time, step → marker delay.

Runs `nilm demo` in a subprocess (a short history, then live at `--speed`, 60x by default) and
measures, with headless Chromium:

- **demo CPU**: CPU seconds of the demo process (`/proc/PID/stat`, user + system) over a
  window, as a share of one core, with no page open and with one Live page open. Goals:
  ≤ 10 % and ≤ 25 % of a core at 60x.
- **first paint**: navigation until the live chart holds data, cold (a new window with the
  browser's cache cleared: every script comes over the network again, which each sample checks)
  and warm (the same window again), several samples each (min / median / max; the goal is on
  the median), both while the flow runs (goal < 2 s) and, after the demo stops, over its
  database served by `nilm dashboard` with no flow beside it (goal < 1 s cold: meaningful on an
  idle machine only). Beside each, `GET /` alone (the server building a session's page) and
  where a cold paint's time went (server, scripts, the page's document over the websocket).
  One Chromium serves the whole benchmark.
- **each page over time**: its Bokeh model count and its JS heap (after a forced garbage
  collection) at the start and the end of a watch; goals: no new models, heap growth ≤ 10 %.
  Quick mode watches each page for seconds; the long mode's default is 10 minutes a page
  (`--watch-s 3600` for the issue's hour).
- **step → marker**: for each event whose step happened while the page was open, the wall
  time from the step (simulated time mapped to the wall clock from the demo's "simulator live"
  log line) to its first marker in the page (polled in the page every 100 ms). Median and
  95th percentile; goals ≤ 3 s and ≤ 6 s. At 60x the flow's own wait for later samples
  shrinks 60-fold in wall time: run `--speed 1 --watch-s 1800` for a figure a household sees.

`--month` adds the older measurements on a 30-day database (query of the 30-day view, server
render). Prints every figure; exits 1 when a goal it prints is missed.
Run: `.venv/bin/python benchmarks/bench_dashboard.py [--quick] [--speed X] [--watch-s S]`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PAGES = ("Live", "Events", "Label", "Devices", "Unknowns & health")
CPU_IDLE_GOAL = 10.0
CPU_LIVE_GOAL = 25.0
PAINT_GOAL_S = 2.0
PAINT_IDLE_GOAL_S = 1.0
HEAP_GROWTH_GOAL = 0.10
MARKER_MEDIAN_GOAL_S = 3.0
MARKER_P95_GOAL_S = 6.0
_TICKS = os.sysconf("SC_CLK_TCK")

_HAS_CHART = """
if (!window.Bokeh || !Bokeh.documents.length) return false;
for (const m of Bokeh.documents[0].all_models) {
  if (m.data && 'total_mean' in m.data && m.data.ts && m.data.ts.length) return true;
}
return false;
"""
_MODEL_COUNT = "return (window.Bokeh && Bokeh.documents.length) ? " \
    "Bokeh.documents[0].all_models.size : null;"  # fmt: skip
# Remember when each event's marker first shows: polled in the page, so the figure does not
# depend on how often the benchmark asks.
_WATCH_MARKERS = """
if (window.__firstSeen) return;
window.__firstSeen = {};
setInterval(() => {
  if (!window.Bokeh || !Bokeh.documents.length) return;
  const now = Date.now();
  for (const m of Bokeh.documents[0].all_models) {
    if (m.data && 'event_id' in m.data && 'y' in m.data) {
      for (const id of m.data.event_id) {
        if (!(id in window.__firstSeen)) window.__firstSeen[id] = now;
      }
    }
  }
}, 100);
"""
_TAB = """
const want = arguments[0];
const walk = (root) => {
  for (const e of root.querySelectorAll('.bk-tab')) if (e.textContent.trim() === want) return e;
  for (const e of root.querySelectorAll('*')) if (e.shadowRoot) {
    const f = walk(e.shadowRoot); if (f) return f;
  }
  return null;
};
const tab = walk(document); if (tab) tab.click(); return !!tab;
"""


class Goals:
    """Collects each figure with its goal; `missed` says whether any goal was not met."""

    def __init__(self) -> None:
        self.missed: list[str] = []

    def check(self, label: str, value: float, goal: float, unit: str, note: str = "") -> None:
        ok = value <= goal
        if not ok:
            self.missed.append(label)
        mark = "ok  " if ok else "MISS"
        load = os.getloadavg()[0]  # the machine is shared: every figure says how busy it was
        print(f"  {mark} {label:<46} {value:9.2f} {unit:<4} (goal ≤ {goal:g} {unit}){note}"
              f"  [load {load:.2f}]", flush=True)  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def cpu_share(pid: int, seconds: float) -> float:
    """Percent of one core the process used over the next `seconds` of wall time."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)  # the measurement window itself
    return 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(check: Callable[[], Any], timeout_s: float, every_s: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = check()
            if value:
                return value
        time.sleep(every_s)
    return None


@contextlib.contextmanager
def demo_process(
    tmp: Path, speed: float, backfill_days: float
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = _free_port()
    log_path = tmp / "demo.log"
    db = tmp / "demo.duckdb"
    command = [sys.executable, "-c", "from flows.cli import main; raise SystemExit(main())",
               "demo", "--port", str(port), "--db", str(db), "--speed", str(speed),
               "--backfill-days", str(backfill_days)]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        live = _until(lambda: "simulator live" in log_path.read_text(), 300, 0.5)
        if not live or proc.poll() is not None:
            raise RuntimeError(f"the demo did not go live: {log_path.read_text()[-2000:]}")
        yield proc, url, log_path
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def live_clock(log_text: str) -> tuple[datetime, datetime, float]:
    """(simulated, wall, speed) at the moment the demo went live, from its log."""
    found = re.search(r"simulator live: simulated (\S+) is wall (\S+), at ([\d.]+)x", log_text)
    if found is None:
        raise RuntimeError("the demo's log has no 'simulator live' line")
    sim, wall, speed = found.groups()
    return datetime.fromisoformat(sim), datetime.fromisoformat(wall), float(speed)


def new_browser(profile: str) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1500,1100", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(30)
    driver.set_page_load_timeout(60)
    return driver


def first_paint(driver: Any, url: str) -> float:
    t0 = time.perf_counter()
    driver.get(url)
    if not _until(lambda: driver.execute_script(_HAS_CHART), 60, 0.02):
        return float("inf")
    return time.perf_counter() - t0


# Where a paint's time went, from the page's own navigation and resource timing (ms since the
# navigation began): the server's answer to GET /, the last script in, the scripts run, and
# bytes that came over the network (0 when the cache served them).
_NAVIGATION = """
const nav = performance.getEntriesByType('navigation')[0];
const scripts = performance.getEntriesByType('resource').filter((r) => r.name.includes('.js'));
return {
  get_ms: nav.responseStart - nav.requestStart,
  scripts_in_ms: Math.max(0, ...scripts.map((r) => r.responseEnd)),
  scripts_run_ms: nav.domContentLoadedEventEnd,
  fetched_bytes: scripts.reduce((n, r) => n + r.transferSize, 0),
};
"""


def paint_samples(driver: Any, url: str, samples: int) -> dict[str, list[float]]:
    """Cold and warm first paints, each cold one in a new window with the cache cleared.

    One browser for every sample: a new profile per sample would cost a Chromium start each.
    Clearing the cache (HTTP and compiled-script caches both live in it) makes the scripts come
    over the network again; a cold sample that fetched nothing would not be cold, so it fails.
    """
    anchor = driver.current_window_handle
    figures: dict[str, list[float]] = {
        k: [] for k in ("cold", "warm", "get_ms", "scripts_in_ms", "scripts_run_ms")
    }
    for _ in range(samples):
        driver.switch_to.new_window("window")
        try:
            driver.execute_cdp_cmd("Network.enable", {})
            driver.execute_cdp_cmd("Network.clearBrowserCache", {})
            cold = first_paint(driver, url)
            nav = driver.execute_script(_NAVIGATION)
            if not nav["fetched_bytes"]:
                raise RuntimeError("a cold first paint took every script from a cache")
            figures["cold"].append(cold)
            for key in ("get_ms", "scripts_in_ms", "scripts_run_ms"):
                figures[key].append(float(nav[key]))
            figures["warm"].append(first_paint(driver, url))
        finally:
            driver.close()
            driver.switch_to.window(anchor)
    return figures


def get_page_s(url: str, samples: int) -> list[float]:
    """Seconds the server takes to answer `GET /` (it builds a whole session's page)."""
    import urllib.request

    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as response:
            response.read()
        times.append(time.perf_counter() - t0)
    return times


def spread(values: list[float], unit: str = "s") -> str:
    return (f"min {min(values):6.2f}  median {statistics.median(values):6.2f}  "
            f"max {max(values):6.2f} {unit}")  # fmt: skip


def bench_paint(driver: Any, url: str, samples: int, goal_s: float, goals: Goals,
                where: str) -> None:  # fmt: skip
    """First paint cold and warm (`samples` each) and `GET /` alone; the goal on the medians."""
    figures = paint_samples(driver, url, samples)
    gets = get_page_s(url, samples)
    print(f"  GET / alone          {spread(gets)}")
    print(f"  cold: GET / answered {spread([v / 1000 for v in figures['get_ms']])}")
    print(f"        scripts in     {spread([v / 1000 for v in figures['scripts_in_ms']])}")
    print(f"        scripts run    {spread([v / 1000 for v in figures['scripts_run_ms']])}")
    for kind in ("cold", "warm"):
        print(f"  {kind} paint           {spread(figures[kind])}")
        goals.check(f"first paint {kind} {where} (median of {samples})",
                    statistics.median(figures[kind]), goal_s, "s")  # fmt: skip


def heap_mb(driver: Any) -> float:
    driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
    metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    used = next(m["value"] for m in metrics if m["name"] == "JSHeapUsedSize")
    return float(used) / 1e6


def settled_models(driver: Any) -> Callable[[], bool]:
    """A check that is true once the page's model count held for three readings running."""
    last: list[int] = []

    def settled() -> bool:
        last.append(driver.execute_script(_MODEL_COUNT))
        return len(last) >= 3 and last[-1] is not None and last[-1] == last[-2] == last[-3]

    return settled


def open_every_page(driver: Any) -> None:
    """Each page is built when first opened: open each once, until its models have come."""
    for page in PAGES[1:]:
        before = driver.execute_script(_MODEL_COUNT)
        driver.execute_script(_TAB, page)
        _until(lambda b=before: driver.execute_script(_MODEL_COUNT) > b, 60, 0.5)
        _until(settled_models(driver), 60, 1.0)
    driver.execute_script(_TAB, "Live")


def watch_page(driver: Any, page: str, seconds: float, goals: Goals) -> None:
    driver.execute_script(_TAB, page)
    _until(settled_models(driver), 60, 1.0)
    models0, heap0 = driver.execute_script(_MODEL_COUNT), heap_mb(driver)
    time.sleep(seconds)  # the watch itself: refreshes run meanwhile
    models1, heap1 = driver.execute_script(_MODEL_COUNT), heap_mb(driver)
    print(f"  {page:<18} models {models0:5d} → {models1:5d}   JS heap {heap0:7.1f} → "
          f"{heap1:7.1f} MB over {seconds:.0f} s")  # fmt: skip
    goals.check(f"{page}: new Bokeh models", float(models1 - models0), 0.0, "")
    goals.check(f"{page}: JS heap growth", 100.0 * (heap1 / heap0 - 1.0), 100 * HEAP_GROWTH_GOAL,
                "%")  # fmt: skip


def watch_pages_together(
    driver: Any, url: str, seconds: float, report_every_s: float, goals: Goals
) -> None:
    """Every page in its own window of one browser, watched at once for `seconds`.

    Each window is its own session opened on its page (`?page=`), so each refreshes the page
    it shows, as a household's tab would. Prints each page's models and heap every
    `report_every_s` (a cut-short run still leaves figures), then checks the goals at the end.
    """
    from urllib.parse import quote

    windows: dict[str, str] = {}
    for page in PAGES:
        driver.switch_to.new_window("window")
        driver.get(f"{url}?page={quote(page)}")
        windows[page] = driver.current_window_handle
    start: dict[str, tuple[int, float]] = {}
    for page, handle in windows.items():
        driver.switch_to.window(handle)
        driver.execute_cdp_cmd("Performance.enable", {})
        _until(settled_models(driver), 120, 1.0)
        start[page] = (driver.execute_script(_MODEL_COUNT), heap_mb(driver))
    t0 = time.monotonic()
    last: dict[str, tuple[int, float]] = dict(start)
    elapsed = 0.0
    while elapsed < seconds:
        time.sleep(min(report_every_s, seconds - elapsed))  # the watch: refreshes run meanwhile
        elapsed = time.monotonic() - t0
        load = os.getloadavg()[0]
        for page, handle in windows.items():
            driver.switch_to.window(handle)
            models = driver.execute_script(_MODEL_COUNT)
            if models is None:  # a page that stopped answering: keep its last good figures
                print(f"  {elapsed:6.0f} s  {page:<18} no Bokeh document", flush=True)
                continue
            last[page] = (models, heap_mb(driver))
            (m0, h0), (m1, h1) = start[page], last[page]
            print(f"  {elapsed:6.0f} s  {page:<18} models {m0:5d} → {m1:5d}   JS heap "
                  f"{h0:7.1f} → {h1:7.1f} MB ({100 * (h1 / h0 - 1):+5.1f} %)  load {load:.2f}",
                  flush=True)  # fmt: skip
    for page in PAGES:
        (m0, h0), (m1, h1) = start[page], last[page]
        goals.check(f"{page}: new Bokeh models", float(m1 - m0), 0.0, "")
        goals.check(f"{page}: JS heap growth", 100.0 * (h1 / h0 - 1.0), 100 * HEAP_GROWTH_GOAL,
                    "%")  # fmt: skip


def marker_delays(
    seen: dict[str, int], db: Path, log_text: str, opened_wall: float, closed_wall: float
) -> list[float]:
    """Seconds from each step (mapped to wall time) to its first marker in the page.

    `seen` maps event ids to when the page first showed them (ms since the epoch); the
    database is read once the demo has let go of it.
    """
    sim0, wall0, speed = live_clock(log_text)
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT event_id, ts FROM events WHERE ts >= ?", [sim0]).fetchall()
    finally:
        con.close()
    delays = []
    for event_id, ts in rows:
        step_wall = wall0.timestamp() + (ts - sim0).total_seconds() / speed
        if not opened_wall + 1.0 < step_wall < closed_wall - MARKER_P95_GOAL_S:
            continue  # stepped before the watch, or too late to be seen in it
        # never shown in the watch: as late as the watch allowed, which a goal then misses
        delays.append(seen[event_id] / 1000.0 - step_wall if event_id in seen
                      else closed_wall - step_wall)  # fmt: skip
    return delays


@contextlib.contextmanager
def dashboard_process(db: Path, log_path: Path) -> Iterator[str]:
    """`nilm dashboard --db DB` in a subprocess (no flow): yields its URL once it answers."""
    port = _free_port()
    command = [sys.executable, "-c", "from flows.cli import main; raise SystemExit(main())",
               "dashboard", "--db", str(db), "--port", str(port)]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        import urllib.request

        def up() -> bool:
            with urllib.request.urlopen(url + "liveness", timeout=5) as response:
                return bool(response.status == 200)

        if not _until(up, 120, 0.2) or proc.poll() is not None:
            raise RuntimeError(f"nilm dashboard did not start: {log_path.read_text()[-2000:]}")
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def bench_demo(args: argparse.Namespace, goals: Goals, driver: Any | None) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp_name:
        tmp = Path(tmp_name)
        print(f"demo at {args.speed:g}x after {args.backfill_days:g} days of history")
        with demo_process(tmp, args.speed, args.backfill_days) as (proc, url, log_path):
            time.sleep(args.settle_s)  # past the simulated user's labels and the first wake-ups
            print(f"\ndemo CPU, {args.cpu_s:.0f} s windows (CPU time of the demo process)")
            idle = cpu_share(proc.pid, args.cpu_s)
            goals.check("no page open", idle, CPU_IDLE_GOAL, "%")
            if driver is None:
                print("\nbrowser: skipped, Debian's chromium and chromium-driver are missing")
                return
            print(f"\nfirst paint while the flow runs (until the live chart holds data), "
                  f"{args.paint_samples} samples")  # fmt: skip
            bench_paint(driver, url, args.paint_samples, PAINT_GOAL_S, goals, "with the flow")
            first_paint(driver, url)
            driver.execute_cdp_cmd("Performance.enable", {})
            live = cpu_share(proc.pid, args.cpu_s)
            goals.check("one Live page open", live, CPU_LIVE_GOAL, "%")
            if args.pages_together:
                print(f"\nevery page at once, one window each (models, JS heap after "
                      f"GC), {args.watch_s:g} s")  # fmt: skip
                live_window = driver.current_window_handle
                watch_pages_together(driver, url, args.watch_s, args.report_every_s, goals)
                driver.switch_to.window(live_window)
            else:
                open_every_page(driver)
                print(f"\neach page over time (models, JS heap after GC), {args.watch_s:g} s")
                for page in PAGES:
                    watch_page(driver, page, args.watch_s, goals)
            # The Live page refreshes only while in sight: watch markers there.
            driver.execute_script(_TAB, "Live")
            driver.execute_script(_WATCH_MARKERS)
            opened = time.time()
            time.sleep(args.latency_s)  # the watch: steps happen meanwhile
            seen = driver.execute_script("return window.__firstSeen || {};")
            closed = time.time()
            driver.get("about:blank")  # the demo's page goes before the demo does
            log_text = log_path.read_text()
        delays = marker_delays(seen, tmp / "demo.duckdb", log_text, opened, closed)
        print(f"\nstep → marker on the Live page ({len(delays)} events stepped while watched; "
              "wall time, from the demo's simulated-to-wall clock)")  # fmt: skip
        if len(delays) >= 2:
            q = statistics.quantiles(delays, n=20, method="inclusive")
            goals.check("median", statistics.median(delays), MARKER_MEDIAN_GOAL_S, "s")
            goals.check("95th percentile", q[18], MARKER_P95_GOAL_S, "s")
        else:
            print("  too few events stepped while the page was open for a figure: watch longer")
        print(f"\nfirst paint with no flow ('nilm dashboard' over the demo's database), "
              f"{args.paint_samples} samples; the goal holds on an idle machine")  # fmt: skip
        with dashboard_process(tmp / "demo.duckdb", tmp / "dashboard.log") as dashboard_url:
            bench_paint(driver, dashboard_url, args.paint_samples, PAINT_IDLE_GOAL_S, goals,
                        "no flow")  # fmt: skip
            driver.get("about:blank")


def bench_month(days: float) -> None:
    """The 30-day database: power query cold/warm and the page's render in the server."""
    from bokeh.document import Document

    from dashboards.app import build_app
    from dashboards.sample import fill_sample_database
    from dashboards.store import DataStore

    with tempfile.TemporaryDirectory(prefix="bench-month-") as tmp:
        path = Path(tmp) / "month.duckdb"
        con = duckdb.connect(str(path))
        fill_sample_database(con, days=days)
        con.close()
        con = duckdb.connect(str(path), read_only=True)
        store = DataStore(con)
        bounds = store.data_bounds()
        assert bounds is not None
        print(f"\n{days:g}-day database (simulated readings, derived rows)")
        for label in ("cold", "warm"):
            store.invalidate()
            t0 = time.perf_counter()
            view = store.power(bounds[0], bounds[1], "auto")
            print(f"  power view {label:<5} {1000 * (time.perf_counter() - t0):8.1f} ms "
                  f"({len(view.frame):,} points)")  # fmt: skip
        for window in ("1 h", "30 days"):
            store.invalidate()
            t0 = time.perf_counter()
            build_app(store, window=window).server_doc(Document())
            print(
                f"  server render, window {window:<8} {1000 * (time.perf_counter() - t0):8.1f} ms"
            )
        store.close()
        con.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under a minute, short windows")
    parser.add_argument("--speed", type=float, default=60.0)
    parser.add_argument("--backfill-days", type=float, default=None)
    parser.add_argument("--watch-s", type=float, default=None, help="seconds per page")
    parser.add_argument("--cpu-s", type=float, default=None, help="CPU window (s)")
    parser.add_argument("--latency-s", type=float, default=None, help="step → marker watch (s)")
    parser.add_argument("--paint-samples", type=int, default=None,
                        help="cold and warm first paints of each (3 quick, 6 full)")  # fmt: skip
    parser.add_argument("--month", action="store_true", help="also the 30-day database")
    parser.add_argument("--pages-together", action="store_true",
                        help="watch every page at once, one browser window each")  # fmt: skip
    parser.add_argument("--report-every-s", type=float, default=600.0,
                        help="with --pages-together: print the figures this often")  # fmt: skip
    args = parser.parse_args()
    quick = args.quick
    args.backfill_days = args.backfill_days if args.backfill_days is not None else (
        0.05 if quick else 1.0)  # fmt: skip
    args.watch_s = args.watch_s if args.watch_s is not None else (4.0 if quick else 600.0)
    args.cpu_s = args.cpu_s if args.cpu_s is not None else (8.0 if quick else 60.0)
    args.latency_s = args.latency_s if args.latency_s is not None else (
        15.0 if quick else 600.0)  # fmt: skip
    args.settle_s = 3.0 if quick else 20.0
    args.paint_samples = args.paint_samples or (3 if quick else 6)
    print("Figures on a shared machine are noisy: re-measure on an idle one.\n")
    began = time.monotonic()
    goals = Goals()
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
            driver = new_browser(profile)  # one Chromium for the whole benchmark
            try:
                bench_demo(args, goals, driver)
            finally:
                driver.quit()
    else:
        bench_demo(args, goals, None)
    if args.month:
        bench_month(30.0)
    print(f"\nbenchmark wall time {time.monotonic() - began:.0f} s")
    if goals.missed:
        print(f"\nNOT met: {', '.join(goals.missed)}")
        return 1
    print("\nevery goal met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
