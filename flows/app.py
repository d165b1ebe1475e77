"""Process assembly: the commands that run the flow, each owning its DuckDB file.

`replay` runs recorded files through the dataflow and exits; `demo` and `run` are long-lived,
and serve the dashboard from the same process because DuckDB lets one process open the file.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import cluster_main, run_main
from tqdm import tqdm

from flows.database import open_database
from flows.dataflow import get_flow
from flows.hass import HassPublisher, feeding, start_publisher, start_publishers
from flows.sink import DuckDBSink
from flows.sources import (
    FileReplaySource,
    LabelSource,
    SimulatorSource,
    StoppableSource,
    count_rows,
    stored_labels,
)
from nilm.settings import Settings
from nilm.simulator import SimulatorConfig

__all__ = ["ReplaySummary", "recovery_config", "replay", "run_demo", "run_live"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    rows_read: int
    accepted: int
    rejected: int
    events: int
    seconds: float

    def text(self) -> str:
        rate = self.rows_read / self.seconds if self.seconds > 0 else 0.0
        return (
            f"rows read {self.rows_read:,}  accepted {self.accepted:,}  "
            f"rejected {self.rejected:,}  events {self.events:,}  "
            f"in {self.seconds:.1f} s ({rate:,.0f} rows/s)"
        )


def recovery_config(settings: Settings) -> RecoveryConfig:
    """Bytewax recovery in `settings.recovery_dir`, created with one partition on first use."""
    db_dir = Path(settings.recovery_dir)
    if not db_dir.exists() or not any(db_dir.iterdir()):
        db_dir.mkdir(parents=True, exist_ok=True)
        init_db_dir(db_dir, 1)
    return RecoveryConfig(str(db_dir))


def replay(paths: list[Path], settings: Settings, progress: bool = True) -> ReplaySummary:
    """Runs recorded readings through the dataflow into `settings.db_path`.

    Labels already stored are learned as their events pass, so a replay after labelling
    recognises what was labelled, and later events by what was learned.
    """
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such file: {', '.join(missing)}")
    started = time.perf_counter()
    total = sum(count_rows(p) for p in paths)
    con = open_database(settings.db_path)
    try:
        with tqdm(total=total, unit="rows", disable=not progress, unit_scale=True) as bar:
            read = Counter[str]()

            def on_rows(n: int) -> None:
                read["rows"] += n
                bar.update(n)

            written = Counter[str]()
            sink = DuckDBSink(con, written)
            source = FileReplaySource(paths, settings.home_id, on_rows=on_rows)
            labels, _ = stored_labels(con)
            run_main(get_flow(settings, source, sink, stored_labels=labels))
    finally:
        con.close()
    return ReplaySummary(
        rows_read=read["rows"],
        accepted=written["readings"],
        rejected=written["rejected"],
        events=written["events"],
        seconds=time.perf_counter() - started,
    )


def _start_dashboard(
    con: duckdb.DuckDBPyConnection | Sequence[duckdb.DuckDBPyConnection], settings: Settings
) -> Any:
    try:
        from dashboards.serve import start_dashboard
    except ImportError as err:  # the dashboard is optional for headless runs
        log.warning("dashboard not available: %s", err)
        return None
    return start_dashboard(con, settings)


class StopOnSignal:
    """Turns Ctrl-C and SIGTERM into a flag the sources read, so the flow ends by draining.

    Python's default, KeyboardInterrupt, would cut a DuckDB write off mid-transaction.
    """

    def __init__(self) -> None:
        self.requested = False

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> StopOnSignal:
        self.previous = {
            sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:  # a second Ctrl-C: the user means it
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping: finishing what has been read (Ctrl-C again to abort)", flush=True)


def _run_flow(settings: Settings, flow: Any, recovery: RecoveryConfig | None) -> None:
    # A snapshot is taken at each epoch's end: the epoch is the snapshot interval.
    epoch = timedelta(seconds=settings.snapshot_interval_s)
    run_main(flow, epoch_interval=epoch, recovery_config=recovery)


def run_demo(
    settings: Settings,
    days: float | None = None,
    backfill_days: float = 2.0,
    speed: float = 60.0,
    seed: int = 1,
    serve: bool = True,
    confirm_per_device: int = 3,
) -> int:
    """Simulator → flow → DuckDB → dashboard, in one process, until Ctrl-C or `days`.

    After the history, a simulated user confirms `confirm_per_device` events of each device.
    """
    from flows.demo import DemoUser

    simulator = SimulatorSource(
        SimulatorConfig(seed=seed, home_id=settings.home_id),
        days=days,
        backfill_days=backfill_days,
        speed=speed,
    )
    con = open_database(settings.db_path)
    user = DemoUser(con, simulator, confirm_per_device)
    dashboard = None
    publisher = None
    # The handler is in place before the banner, so a Ctrl-C at any point after it drains.
    with StopOnSignal() as stop:
        try:
            publisher = start_publisher(con, settings)
            dashboard = _start_dashboard(con, settings) if serve else None
            url = getattr(dashboard, "url", None)
            print(f"database   {Path(settings.db_path).resolve()}")
            print(f"dashboard  {url or 'not served'}")
            if publisher is not None:
                print(f"mqtt       {publisher.where} (Home Assistant discovery)")
            print(
                f"simulating home {settings.home_id!r} (seed {seed}): {backfill_days:g} days of "
                f"history, then live at {speed:g}x; Ctrl-C stops",
                flush=True,
            )
            if confirm_per_device > 0:
                user.start()
            source = StoppableSource(simulator, stop)
            # The simulated history is made anew each time, so labels from an earlier demo on
            # this file are learned as their events pass again; the input takes the new ones.
            earlier, last_label_id = stored_labels(con)
            labels = LabelSource(
                con, settings.label_poll_s, lambda: simulator.done or stop(), last_label_id
            )
            sink = feeding(DuckDBSink(con), publisher)
            flow = get_flow(settings, source, sink, labels, stored_labels=earlier)
            _run_flow(settings, flow, None)
        finally:
            user.stop()
            if user.is_alive():
                user.join()
            if publisher is not None:
                publisher.stop()
            _print_totals(con)
            if dashboard is not None:
                dashboard.stop()
            con.close()
    return 0


def run_cluster(settings: Settings, config: str | None, processes: int) -> int:
    """`processes` cluster processes of `nilm run` on this machine, restarted together when one
    dies, until Ctrl-C or SIGTERM (passed on to each, so every one drains)."""
    from flows.fleet import process_command, supervise

    if processes < 2:
        raise ValueError(f"--processes {processes}: a cluster needs at least 2 processes")
    recovery_config(settings)  # made once here, not raced by the processes
    with StopOnSignal() as stop:
        return supervise(
            lambda k, addresses: process_command(config, k, addresses, settings.db_path),
            processes,
            stop,
        )


def run_live(
    settings: Settings, process_id: int | None = None, addresses: Sequence[str] | None = None
) -> int:
    """The long-lived flow on the Pi agents' readings, with recovery, serving the dashboard.

    Alone (`addresses` None) this process runs every home. As process `process_id` of a Bytewax
    cluster (`addresses`, one per process), it computes its share of the homes; process 0 owns
    the database files, writes every home's rows and serves the dashboard.
    """
    from flows.fleet import fleet_flow, open_shards

    owner = not addresses or process_id in (None, 0)
    connections = open_shards(settings) if owner else {}
    dashboard = None
    publishers: dict[int, HassPublisher] = {}
    with StopOnSignal() as stop:
        try:
            if owner:
                first = settings.home_list()[0].home_id
                publishers = start_publishers(connections, settings)
                # One page over every shard, with a home picker; the first home shown first.
                shown = replace(settings, home_id=first)
                dashboard = _start_dashboard([connections[k] for k in sorted(connections)], shown)
                for path in settings.shard_paths():
                    print(f"database   {Path(path).resolve()}")
                print(f"dashboard  {getattr(dashboard, 'url', None) or 'not served'}")
                for publisher in publishers.values():
                    print(f"mqtt       {publisher.where} (Home Assistant discovery)")
            for home in settings.home_list():
                print(f"agent      {home.home_id}: {home.agent.url}", flush=True)
            nudges = {k: p.nudge for k, p in publishers.items()}
            flow = fleet_flow(settings, connections, stop, on_write=nudges)
            epoch = timedelta(seconds=settings.snapshot_interval_s)
            if addresses:
                # The folder is made once, before the processes start (`nilm run --processes`
                # does it; across machines, `python -m bytewax.recovery DIR 1` on the share).
                if not Path(settings.recovery_dir).is_dir():
                    raise FileNotFoundError(
                        f"recovery folder {settings.recovery_dir} does not exist: create it once "
                        f"for the cluster with: python -m bytewax.recovery "
                        f"{settings.recovery_dir} 1"
                    )
                cluster_main(
                    flow,
                    list(addresses),
                    process_id or 0,
                    epoch_interval=epoch,
                    recovery_config=RecoveryConfig(settings.recovery_dir),
                )
            else:
                _run_flow(settings, flow, recovery_config(settings))
        finally:
            for publisher in publishers.values():
                publisher.stop()
            if dashboard is not None:
                dashboard.stop()
            for con in connections.values():
                con.close()
    return 0


def _print_totals(con: duckdb.DuckDBPyConnection) -> None:
    row = con.execute(
        "SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM events), "
        "(SELECT count(*) FROM events WHERE device IS NOT NULL), (SELECT count(*) FROM labels)"
    ).fetchone()
    if row is not None:
        print(f"readings {row[0]:,}  events {row[1]:,}  recognised {row[2]:,}  labels {row[3]:,}")
