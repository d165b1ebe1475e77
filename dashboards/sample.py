"""Sample databases for the dashboard's tests, benchmark and screenshots.

The household simulator gives the readings; the events, activations, clusters and alerts are
derived from its ground truth, standing in for what the flow writes, so that every page has
something to show without running the flow. Nothing here is used by a running dashboard.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from nilm.records import READING_COLUMNS, ReadingBatch, TruthEvent, event_id_for, to_epoch_us
from nilm.schema import SCHEMA_SQL
from nilm.simulator import HouseholdSimulator, SimulatorConfig

__all__ = ["fill_sample_database", "write_readings"]

log = logging.getLogger(__name__)


def write_readings(con: duckdb.DuckDBPyConnection, batch: ReadingBatch) -> int:
    """Insert a batch into `readings` through Arrow (fast: millions of rows in seconds)."""
    table = pa.table(
        {
            "home_id": pa.array([batch.home_id] * len(batch), pa.string()),
            "ts": pa.array(batch.ts_us, pa.timestamp("us", tz="UTC")),
            "seq": pa.array(batch.seq, pa.int64()),
            **{name: pa.array(batch.columns[name], pa.float64()) for name in READING_COLUMNS},
        }
    )
    cols = ", ".join(["home_id", "ts", "seq", *READING_COLUMNS])
    con.register("_sample_readings", table)
    try:
        con.execute(f"INSERT OR IGNORE INTO readings ({cols}) SELECT {cols} FROM _sample_readings")
    finally:
        con.unregister("_sample_readings")
    return len(batch)


def _insert(
    con: duckdb.DuckDBPyConnection, table: str, columns: list[str], rows: list[tuple[object, ...]]
) -> None:
    """Insert rows through a DataFrame (DuckDB's executemany is slow: ~3 ms a row)."""
    frame = pd.DataFrame(rows, columns=columns)
    con.register("_sample_rows", frame)
    try:
        names = ", ".join(columns)
        con.execute(f"INSERT OR IGNORE INTO {table} ({names}) SELECT {names} FROM _sample_rows")
    finally:
        con.unregister("_sample_rows")


def _event_rows(
    truth: list[TruthEvent], home_id: str, rng: np.random.Generator, unknown: set[str]
) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for t in truth:
        ts_us = to_epoch_us(t.ts)
        confidence = float(rng.uniform(0.35, 0.99))
        novelty = float(rng.uniform(0.0, 0.4))
        device: str | None = t.device
        cluster_id = None
        if t.device in unknown:
            device, confidence, novelty = None, None, float(rng.uniform(0.7, 1.0))
            cluster_id = f"c-{t.device}"
        elif confidence < 0.5:
            device = None
        split_a = 1.0 if t.legs == "a" else 0.0 if t.legs == "b" else 0.5
        dp = t.delta_p_w * float(rng.normal(1.0, 0.02))
        rows.append(
            (
                event_id_for(home_id, ts_us, t.legs), home_id, t.ts, t.legs, dp, device,
                confidence, novelty, None if confidence is None else 1.0 - confidence,
                cluster_id, dp * 0.3, dp * 1.05, dp / 120.0, 0.0, 0.0, 0.0,
                dp * split_a, dp * (1.0 - split_a), 120.0 + float(rng.normal(0, 1)),
                max(dp, 0.0) * 0.5, 0.0, 0.0, "sample",
            )
        )  # fmt: skip
    return rows


def _activation_rows(truth: list[TruthEvent], home_id: str) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    open_on: dict[tuple[str, str], TruthEvent] = {}
    for t in truth:
        key = (t.device, t.legs)
        if t.kind == "on":
            open_on[key] = t
        elif t.kind == "off" and key in open_on:
            on = open_on.pop(key)
            hours = (t.ts - on.ts).total_seconds() / 3600.0
            on_id = event_id_for(home_id, to_epoch_us(on.ts), on.legs)
            off_id = event_id_for(home_id, to_epoch_us(t.ts), t.legs)
            rows.append(
                (f"act-{on_id}", home_id, on.device, on.legs, on_id, off_id, on.ts, t.ts,
                 on.delta_p_w, on.delta_p_w * hours)
            )  # fmt: skip
    return rows


def fill_sample_database(
    con: duckdb.DuckDBPyConnection,
    days: float = 2.0,
    seed: int = 0,
    home_id: str = "home",
    start: datetime | None = None,
    novel_device: str | None = "well_pump",
    degrade_device: str | None = "fridge",
    with_results: bool = True,
) -> tuple[int, int]:
    """Fill `con` with `days` of simulated readings and, if `with_results`, the derived rows.

    Returns (readings, events) written. Deterministic for a seed.
    """
    con.execute(SCHEMA_SQL)
    start = start or datetime(2026, 1, 5, tzinfo=UTC)
    whole_days = int(np.ceil(days))
    config = SimulatorConfig(
        seed=seed,
        start=start,
        home_id=home_id,
        novel_device=novel_device,
        novel_from_day=0 if novel_device else None,
        degrade_device=degrade_device,
        degrade_from_day=max(whole_days - 1, 0) if degrade_device else None,
    )
    sim = HouseholdSimulator(config)
    rng = np.random.default_rng(seed)
    end_us = to_epoch_us(start + timedelta(days=days))
    n_readings = n_events = 0
    for day in range(whole_days):
        batch, truth = sim.day(day)
        keep = batch.ts_us < end_us
        n_readings += write_readings(con, batch[keep])
        truth = [t for t in truth if to_epoch_us(t.ts) < end_us]
        if not with_results:
            continue
        events = _event_rows(truth, home_id, rng, {novel_device} if novel_device else set())
        n_events += len(events)
        cols = (
            "event_id, home_id, ts, legs, delta_p_w, device, confidence, novelty, uncertainty, "
            "cluster_id, delta_q_var, delta_s_va, delta_current_a, delta_pf, p_before_w, "
            "p_after_w, delta_p_a_w, delta_p_b_w, voltage_v, inrush_peak_w, ramp_s, "
            "settle_slope_w_per_s, detector"
        )
        if events:
            _insert(con, "events", cols.split(", "), events)
        acts = _activation_rows(truth, home_id)
        if acts:
            act_cols = (
                "activation_id, home_id, device, legs, on_event_id, off_event_id, start_ts, "
                "end_ts, power_w, energy_wh"
            )
            _insert(con, "activations", act_cols.split(", "), acts)
    if with_results and novel_device:
        con.execute(
            """INSERT OR REPLACE INTO clusters
                 (cluster_id, home_id, n_events, typical_delta_p_w, legs, last_seen)
               SELECT cluster_id, home_id, count(*), median(delta_p_w) FILTER (delta_p_w > 0),
                      any_value(legs), max(ts)
               FROM events WHERE cluster_id IS NOT NULL GROUP BY cluster_id, home_id"""
        )
    if with_results and degrade_device:
        since = start + timedelta(days=max(whole_days - 1, 0))
        con.execute(
            "INSERT OR REPLACE INTO alerts (alert_id, home_id, device, ts, metric, since_ts, "
            "before_value, after_value, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [f"alert-{degrade_device}-power", home_id, degrade_device,
             start + timedelta(days=days), "power_w", since, 125.0, 152.0,
             f"{degrade_device} draws 22% more power than it used to (125 W -> 152 W)"],
        )  # fmt: skip
    log.info("sample database: %s readings, %s events", n_readings, n_events)
    return n_readings, n_events
