from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nilm.parsing import (
    ParseError,
    parse_em_status,
    parse_logger_rows,
    parse_redd_rows,
    parse_timestamp,
    sniff_format,
)
from nilm.records import READING_COLUMNS, ReadingBatch
from nilm.validation import ReadingValidator, ValidationLimits

T0 = datetime(2025, 12, 12, 8, 0, tzinfo=UTC)


def good_row(i: int, **changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "timestamp_utc": f"2025-12-12T08:00:{i:02d}.05Z",
        "a_voltage": 121.0, "a_current": 1.5, "a_act_power": 150.0, "a_aprt_power": 180.0,
        "a_pf": 0.83, "a_freq": 60.0,
        "b_voltage": 120.5, "b_current": 2.0, "b_act_power": 220.0, "b_aprt_power": 240.0,
        "b_pf": 0.92, "b_freq": 60.0,
    }  # fmt: skip
    row.update(changes)
    return row


def test_em_status_of_the_real_device_dump(shared_data: Path) -> None:
    dump = json.loads((shared_data / "shelly_pro3em_device_dump_fw1.1.0.json").read_text())
    status = dump["status"]["em:0"]
    reading = parse_em_status(status, T0)
    assert reading.a_act_power_w == status["a_act_power"]
    assert reading.b_aprt_power_w == status["b_aprt_power"]
    assert reading.total_act_power_w == pytest.approx(status["a_act_power"] + status["b_act_power"])
    # S² = P² + Q²: 547.4² − 375.5² on leg a of the dump.
    assert reading.a_react_power_var == pytest.approx(math.sqrt(547.4**2 - 375.5**2))
    assert reading.leg_imbalance_w == pytest.approx(375.5 - 170.8)


def test_the_dump_is_an_eu_panel_so_us_limits_reject_it_and_eu_limits_accept_it(
    shared_data: Path,
) -> None:
    dump = json.loads((shared_data / "shelly_pro3em_device_dump_fw1.1.0.json").read_text())
    batch = ReadingBatch.from_readings("h", [parse_em_status(dump["status"]["em:0"], T0)])
    _, us_rejections = ReadingValidator().validate(batch, "dump")
    assert "voltage outside 90–150 V" in us_rejections[0].reason
    accepted, eu_rejections = ReadingValidator(ValidationLimits(voltage_v=(180, 260))).validate(
        batch, "dump"
    )
    assert len(accepted) == 1 and eu_rejections == []


def test_em_status_names_the_missing_field() -> None:
    status = {k: v for k, v in good_row(0).items() if k != "b_pf"}
    with pytest.raises(ParseError, match="'b_pf' is missing"):
        parse_em_status(status, T0)


def test_logger_rows_keep_good_rows_and_reject_unparseable_ones_with_reasons() -> None:
    rows = [
        good_row(0),
        good_row(1, a_act_power="abc"),
        good_row(2, timestamp_utc="yesterday"),
        {k: v for k, v in good_row(3).items() if k != "b_voltage"},
        good_row(4, a_pf=None),
        good_row(5),
    ]
    batch, rejections = parse_logger_rows(rows, "h", "file.csv")
    assert batch.seq.tolist() == [0, 5]
    reasons = {r.source_key: r.reason for r in rejections}
    assert reasons == {
        "file.csv#1": "field 'a_act_power' = 'abc' is not a number",
        "file.csv#2": "timestamp 'yesterday' is not ISO 8601",
        "file.csv#3": "field 'b_voltage' is missing",
        "file.csv#4": "field 'a_pf' is empty",
    }
    assert json.loads(rejections[0].raw)["a_act_power"] == "abc"


def test_rows_with_their_own_seq_keep_it() -> None:
    batch, _ = parse_logger_rows([good_row(0, seq=41), good_row(1, seq=42)], "h", "agent")
    assert batch.seq.tolist() == [41, 42]


def test_redd_rows_are_active_power_only() -> None:
    batch, rejections = parse_redd_rows(
        [["2011-05-01 00:00:01", "126.71", "117.07"], ["2011-05-01 00:00:04", "x", "1"]],
        "h", "redd.csv",
    )  # fmt: skip
    assert len(batch) == 1 and batch.columns["a_act_power"][0] == 126.71
    assert math.isnan(batch.columns["a_voltage"][0])
    assert batch.measured == ("a_act_power", "b_act_power")
    # Local time in Massachusetts (EDT) is UTC−4.
    assert next(batch.readings()).ts == datetime(2011, 5, 1, 4, 0, 1, tzinfo=UTC)
    assert rejections[0].reason == "field 'mains' = 'x' is not a number"


def test_sniff_format_explains_unknown_columns() -> None:
    assert sniff_format(["timestamp_utc", *READING_COLUMNS]) == "logger"
    with pytest.raises(ParseError, match="unknown columns"):
        sniff_format(["time", "watts"])


def test_timestamps_become_utc() -> None:
    assert parse_timestamp("2025-12-12T03:00:00-05:00") == datetime(2025, 12, 12, 8, tzinfo=UTC)
    with pytest.raises(ParseError):
        parse_timestamp(float("nan"))
