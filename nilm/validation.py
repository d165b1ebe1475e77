"""Validation of readings: physically impossible or out-of-order rows become rejections.

Checks run on whole batches with numpy. A `ReadingValidator` remembers the last accepted
timestamp of its home, so duplicates and out-of-order rows are caught across batches too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from nilm.records import READING_COLUMNS, ReadingBatch, Rejection, from_epoch_us

__all__ = ["ReadingValidator", "ValidationLimits"]


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    """What a plausible reading looks like on a US split-phase panel.

    The EU 230 V panels of the same meter need `voltage_v=(180.0, 260.0)`.
    """

    voltage_v: tuple[float, float] = (90.0, 150.0)
    max_abs_pf: float = 1.0
    # A 200 A service at 150 V is 30 kW per leg; more than that is a glitch.
    max_abs_power_w: float = 40_000.0


def _row_json(batch: ReadingBatch, i: int) -> str:
    row: dict[str, object] = {"ts": from_epoch_us(int(batch.ts_us[i])).isoformat()}
    for name in READING_COLUMNS:
        value = float(batch.columns[name][i])
        row[name] = value if math.isfinite(value) else str(value)
    return json.dumps(row)


class ReadingValidator:
    """Splits each batch of a home into accepted readings and rejections with reasons.

    Parameters
    ----------
    limits
        Plausible ranges; US split-phase defaults.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from nilm.records import Reading
    >>> t0 = datetime(2025, 1, 1, tzinfo=UTC)
    >>> good = Reading(t0, 120, 1, 100, 110, 0.9, 60, 120, 1, 100, 110, 0.9, 60)
    >>> bad = Reading(t0, 120, 1, 100, 110, 1.7, 60, 120, 1, 100, 110, 0.9, 60)
    >>> accepted, rejected = ReadingValidator().validate(
    ...     ReadingBatch.from_readings("h", [good, bad]), source="doc")
    >>> len(accepted), rejected[0].reason
    (1, 'a_pf = 1.7: |pf| above 1')
    """

    def __init__(self, limits: ValidationLimits | None = None) -> None:
        self.limits = limits if limits is not None else ValidationLimits()
        self.last_ts_us: int | None = None
        self.accepted = 0
        self.rejected = 0

    def validate(
        self, batch: ReadingBatch, source: str
    ) -> tuple[ReadingBatch, list[Rejection]]:
        n = len(batch)
        reasons: list[str | None] = [None] * n
        bad = np.zeros(n, dtype=bool)
        lim = self.limits

        def flag(mask: np.ndarray, why: str, column: str | None = None) -> None:
            for i in np.flatnonzero(mask & ~bad).tolist():
                value = batch.columns[column][i] if column else None
                reasons[i] = f"{column} = {value:g}: {why}" if column else why
            bad[mask] = True

        for name in batch.measured:
            flag(~np.isfinite(batch.columns[name]), "not a finite number", name)
        for leg in "ab":
            volts = f"{leg}_voltage"
            if volts in batch.measured:
                v = batch.columns[volts]
                flag(
                    (v < lim.voltage_v[0]) | (v > lim.voltage_v[1]),
                    f"voltage outside {lim.voltage_v[0]:g}–{lim.voltage_v[1]:g} V",
                    volts,
                )
            if f"{leg}_aprt_power" in batch.measured:
                flag(batch.columns[f"{leg}_aprt_power"] < 0, "negative apparent power",
                     f"{leg}_aprt_power")
            if f"{leg}_pf" in batch.measured:
                flag(np.abs(batch.columns[f"{leg}_pf"]) > lim.max_abs_pf, "|pf| above 1",
                     f"{leg}_pf")
            flag(np.abs(batch.columns[f"{leg}_act_power"]) > lim.max_abs_power_w,
                 f"|active power| above {lim.max_abs_power_w:g} W", f"{leg}_act_power")

        # Order is checked last and only among rows that are otherwise good, so one bad
        # timestamp cannot push the good rows after it out. A good row is accepted when it is
        # after every good row before it (and the last accepted one): a rejected row is never
        # after that maximum, so the running maximum is the last accepted timestamp.
        good = np.flatnonzero(~bad)
        ts = np.asarray(batch.ts_us, dtype=np.int64)[good]
        start = self.last_ts_us if self.last_ts_us is not None else np.iinfo(np.int64).min
        before = np.maximum.accumulate(np.concatenate([[start], ts]))
        for k in np.flatnonzero(ts <= before[:-1]).tolist():
            at, last = int(ts[k]), int(before[k])
            kind = "duplicate" if at == last else "out-of-order"
            reasons[good[k]] = (
                f"{kind} timestamp {from_epoch_us(at).isoformat()}: "
                f"not after {from_epoch_us(last).isoformat()}"
            )
            bad[good[k]] = True
        if len(ts):
            self.last_ts_us = int(before[-1])

        rejections = [
            Rejection(batch.home_id, f"{source}#{int(batch.seq[i])}", _row_json(batch, i),
                      str(reasons[i]))
            for i in np.flatnonzero(bad).tolist()
        ]
        self.accepted += n - len(rejections)
        self.rejected += len(rejections)
        return batch[~bad], rejections
