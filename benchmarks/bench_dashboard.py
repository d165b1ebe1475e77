"""Dashboard speed on a month of 1 Hz data: the 30-day query, and the page's first render.

Builds a DuckDB file holding 30 days of the simulated household at 1 Hz (2.6 M readings, both
legs in each row) with events and device runs, then measures:

- the query of the 30-day power view (`DataStore.power`, downsampled in SQL), cold (first
  call) and warm (median of repeats, with the store's result cache dropped each time), at each
  resolution; and the other queries a first page load makes;
- time to first render of the page: building the session's Bokeh document in the server, and
  in headless Chromium (when installed) from navigation until the chart holds the month's data.

Goal: under 1 s for the 30-day query and for the first render. Prints the figures.
Run: `.venv/bin/python benchmarks/bench_dashboard.py [--days 30] [--db FILE] [--keep]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
from bokeh.document import Document

from dashboards.app import build_app
from dashboards.sample import fill_sample_database
from dashboards.serve import start_dashboard
from dashboards.store import DataStore
from nilm.settings import Settings

GOAL_S = 1.0
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def _timed(fn: Any, repeat: int = 1) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _mark(seconds: float) -> str:
    return "ok " if seconds < GOAL_S else "SLOW"


def build(path: Path, days: float) -> None:
    con = duckdb.connect(str(path))
    t0 = time.perf_counter()
    readings, events = fill_sample_database(con, days=days)
    con.execute("CHECKPOINT")
    con.close()
    size_mb = path.stat().st_size / 1e6
    print(
        f"database: {days:g} days, {readings:,} readings, {events:,} events, "
        f"{size_mb:,.0f} MB, built in {time.perf_counter() - t0:.1f} s"
    )


def bench_queries(con: duckdb.DuckDBPyConnection, days: float) -> None:
    store = DataStore(con)
    bounds = store.data_bounds()
    assert bounds is not None
    end = bounds[1]
    start = end - timedelta(days=days)
    print(f"\n30-day view queries ({start:%Y-%m-%d} – {end:%Y-%m-%d}), goal < {GOAL_S:.0f} s")
    cold, view = _timed(lambda: store.power(start, end, "auto"))
    print(f"  {_mark(cold)} power, auto, first call        {cold * 1000:8.1f} ms  "
          f"{len(view.frame):,} points of {view.bucket_s} s")  # fmt: skip

    def fresh(resolution: str) -> Any:
        store.invalidate()
        return store.power(start, end, resolution)

    for resolution in ("auto", "1 h", "1 min", "1 s"):
        warm, view = _timed(lambda r=resolution: fresh(r), repeat=5)
        note = f"  ({view.note})" if view.note else ""
        print(f"  {_mark(warm)} power, {resolution:<5} median of 5     {warm * 1000:8.1f} ms  "
              f"{len(view.frame):,} points of {view.bucket_s} s{note}")  # fmt: skip
    cached, _ = _timed(lambda: store.power(start, end, "auto"), repeat=5)
    print(f"  {_mark(cached)} power, auto, cached            {cached * 1000:8.1f} ms")

    def others() -> None:
        store.invalidate()
        store.events(start, end, limit=2000)
        store.latest_power()
        store.labelling_queue()
        store.device_names()

    t, _ = _timed(others, repeat=3)
    print(f"  {_mark(t)} events + queue + latest + names {t * 1000:8.1f} ms")

    def devices_page() -> None:
        store.invalidate()
        store.energy_breakdown(start, end)
        store.device_summary(start, end)
        store.activations(end - timedelta(hours=24), end)

    t, _ = _timed(devices_page, repeat=3)
    print(f"  {_mark(t)} devices page: energy per day, summary, timeline {t * 1000:8.1f} ms")
    store.close()


def bench_server_render(con: duckdb.DuckDBPyConnection) -> None:
    print("\nfirst render in the server (build the session's page and its Bokeh models)")
    store = DataStore(con)

    def render(window: str) -> None:
        store.invalidate()
        template = build_app(store, window=window)
        template.server_doc(Document())

    render("1 h")  # imports and first-use costs, not part of a page load
    for window in ("1 h", "30 days"):
        t, _ = _timed(lambda w=window: render(w), repeat=3)
        print(f"  {_mark(t)} live page, window {window:<8} median of 3   {t * 1000:8.1f} ms")
    store.close()


_CHART_SPAN = """
if (!window.Bokeh || !Bokeh.documents.length) return null;
for (const m of Bokeh.documents[0].all_models) {
  if (m.data && 'total_mean' in m.data && 'ts' in m.data && m.data.ts.length) {
    const ts = m.data.ts; return [ts.length, (ts[ts.length - 1] - ts[0]) / 86400000];
  }
}
return null;
"""


# When the server's answer was in, and when the page's scripts had run (ms after navigation).
_TIMING = """
const t = performance.timing;
return [t.responseEnd - t.navigationStart, t.domContentLoadedEventEnd - t.navigationStart];
"""


def bench_browser(con: duckdb.DuckDBPyConnection, days: float) -> None:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        print("\nbrowser: skipped, Debian's chromium and chromium-driver are not installed")
        return
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    handle = start_dashboard(con, Settings(dashboard_port=0))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1500,1100",
    ):  # fmt: skip
        options.add_argument(arg)
    print(
        "\nfirst render in headless Chromium (navigation until the chart holds its data; the "
        "page\nloads ~5 MB of Bokeh/Panel JavaScript whatever the data, cached after the first)"
    )
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            for label, query, want_days in (
                ("warm-up (browser cache)", "", 0.0),
                ("window 1 h", "", 0.0),
                ("window 30 days", "?window=30%20days", days * 0.95),
                ("window 30 days", "?window=30%20days", days * 0.95),
            ):
                t0 = time.perf_counter()
                driver.get(handle.url + query)
                span = None
                while time.perf_counter() - t0 < 30:
                    span = driver.execute_script(_CHART_SPAN)
                    if span and span[1] >= want_days:
                        break
                    time.sleep(0.02)
                took = time.perf_counter() - t0
                points = f"{span[0]:,} points over {span[1]:.1f} days" if span else "no data"
                timing = driver.execute_script(_TIMING)
                print(
                    f"  {_mark(took)} {label:<24} {took * 1000:8.1f} ms  {points}; page served "
                    f"{timing[0]} ms, scripts loaded {timing[1]} ms"
                )
        finally:
            driver.quit()
            handle.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--db", type=Path, default=None, help="reuse or keep this database file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        path = args.db or Path(tmp) / "month.duckdb"
        if not path.exists():
            build(path, args.days)
        con = duckdb.connect(str(path), read_only=True)
        try:
            bench_queries(con, args.days)
            bench_server_render(con)
            bench_browser(con, args.days)
        finally:
            con.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
