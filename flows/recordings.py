"""Writing recordings: simulated readings in the Shelly logger format, and their ground truth."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from nilm.records import READING_COLUMNS, ReadingBatch, TruthEvent
from nilm.simulator import HouseholdSimulator, SimulatorConfig

__all__ = [
    "TRUTH_COLUMNS",
    "TRUTH_OPTIONAL_COLUMNS",
    "logger_table",
    "read_truth_csv",
    "write_simulation",
]

TRUTH_COLUMNS = ("ts", "device", "legs", "kind", "delta_p_w")
# Written after the required columns; a truth file without them reads as before (ramp 0 s).
TRUTH_OPTIONAL_COLUMNS = ("ramp_s",)


def logger_table(batch: ReadingBatch) -> pa.Table:
    """Readings as the Shelly logger writes them: ns UTC timestamps, float32 values, totals."""
    cols = batch.columns
    arrays: dict[str, pa.Array] = {
        "timestamp_utc": pa.array(batch.ts_us * 1000, pa.timestamp("ns", tz="UTC")),
        "id": pa.array(np.zeros(len(batch), np.int16)),
    }
    for name in READING_COLUMNS:
        arrays[name] = pa.array(cols[name].astype(np.float32))
    arrays["total_current"] = pa.array((cols["a_current"] + cols["b_current"]).astype(np.float32))
    arrays["total_act_power"] = pa.array(
        (cols["a_act_power"] + cols["b_act_power"]).astype(np.float32)
    )
    arrays["total_aprt_power"] = pa.array(
        (cols["a_aprt_power"] + cols["b_aprt_power"]).astype(np.float32)
    )
    return pa.table(arrays)


def write_simulation(
    config: SimulatorConfig, days: float, out: Path, truth_path: Path | None, progress: bool = True
) -> tuple[int, int]:
    """Writes `days` of the simulated home to `out` (Parquet or CSV) and its truth as CSV.

    Returns (readings, truth events). Days stream one at a time, so a month fits in memory.
    """
    sim = HouseholdSimulator(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_readings = 0
    truth: list[TruthEvent] = []
    writer: pq.ParquetWriter | None = None
    csv_file = None
    try:
        for batch, events in tqdm(
            sim.iter_batches(days, 86_400),
            total=int(np.ceil(days)),
            unit="day",
            disable=not progress,
        ):
            table = logger_table(batch)
            if out.suffix.lower() == ".csv":
                if csv_file is None:
                    csv_file = out.open("w", newline="")
                    csv.writer(csv_file).writerow(table.column_names)
                rows = zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True)
                w = csv.writer(csv_file)
                for row in rows:
                    w.writerow([row[0].isoformat(), *row[1:]])
            else:
                if writer is None:
                    writer = pq.ParquetWriter(out, table.schema)
                writer.write_table(table)
            n_readings += len(batch)
            truth += events
    finally:
        if writer is not None:
            writer.close()
        if csv_file is not None:
            csv_file.close()
    if truth_path is not None:
        truth_path.parent.mkdir(parents=True, exist_ok=True)
        with truth_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow((*TRUTH_COLUMNS, *TRUTH_OPTIONAL_COLUMNS))
            for e in truth:
                w.writerow([e.ts.isoformat(), e.device, e.legs, e.kind, e.delta_p_w, e.ramp_s])
    return n_readings, len(truth)


def read_truth_csv(path: Path) -> list[TruthEvent]:
    """Ground truth in the `nilm simulate` format; raises ValueError naming a bad line.

    `ramp_s` is optional (files written before it existed, or by other tools, read as 0 s).
    """
    from nilm.parsing import parse_timestamp

    events = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TRUTH_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: truth columns {missing} are missing")
        for line, row in enumerate(reader, start=2):
            try:
                events.append(
                    TruthEvent(
                        parse_timestamp(row["ts"]),
                        row["device"],
                        row["legs"],
                        row["kind"],
                        float(row["delta_p_w"]),
                        float(row.get("ramp_s") or 0.0),
                    )
                )
            except ValueError as err:
                raise ValueError(f"{path}:{line}: {err}") from err
    return events
