from __future__ import annotations

import math

import pytest

from nilm.parsing import parse_logger_rows
from nilm.validation import ReadingValidator
from tests.nilm.test_parsing import good_row

HOSTILE = {
    "nan": (good_row(1, a_act_power=math.nan), "a_act_power = nan: not a finite number"),
    "negative S": (good_row(2, b_aprt_power=-5.0), "b_aprt_power = -5: negative apparent power"),
    "pf > 1": (good_row(3, a_pf=1.2), "a_pf = 1.2: |pf| above 1"),
    "low voltage": (good_row(4, a_voltage=80.0), "a_voltage = 80: voltage outside 90–150 V"),
    "high voltage": (good_row(5, b_voltage=240.0), "b_voltage = 240: voltage outside 90–150 V"),
    "infinite": (good_row(6, b_current=math.inf), "b_current = inf: not a finite number"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_each_hostile_value_is_rejected_with_its_reason_and_neighbours_kept(case: str) -> None:
    row, reason = HOSTILE[case]
    batch, parse_rejections = parse_logger_rows([good_row(0), row, good_row(9)], "h", "f")
    assert parse_rejections == []
    accepted, rejections = ReadingValidator().validate(batch, "f")
    assert accepted.seq.tolist() == [0, 2]
    assert [r.reason for r in rejections] == [reason]
    assert rejections[0].source_key == "f#1"


def test_duplicate_and_out_of_order_timestamps_are_rejected_across_batches() -> None:
    validator = ReadingValidator()
    first, _ = parse_logger_rows([good_row(0), good_row(5)], "h", "f")
    second, _ = parse_logger_rows([good_row(5), good_row(3), good_row(6)], "h", "f", first_seq=2)
    validator.validate(first, "f")
    accepted, rejections = validator.validate(second, "f")
    assert accepted.seq.tolist() == [4]
    assert rejections[0].reason.startswith("duplicate timestamp 2025-12-12T08:00:05.050000")
    assert rejections[1].reason.startswith("out-of-order timestamp 2025-12-12T08:00:03.050000")
    assert (validator.accepted, validator.rejected) == (3, 2)


def test_a_bad_row_does_not_advance_the_clock() -> None:
    # The bad row's timestamp is far in the future; the good rows after it must still pass.
    batch, _ = parse_logger_rows(
        [good_row(0), good_row(59, a_pf=7.0), good_row(1), good_row(2)], "h", "f"
    )
    accepted, rejections = ReadingValidator().validate(batch, "f")
    assert accepted.seq.tolist() == [0, 2, 3] and len(rejections) == 1


def test_each_late_row_is_judged_against_the_last_accepted_one() -> None:
    # 3 and 4 are both before 5; 4 is after the rejected 3 but must not be accepted for it
    batch, _ = parse_logger_rows(
        [good_row(t) for t in (0, 5, 3, 4, 5, 6, 2)] + [good_row(7, a_pf=2.0), good_row(7)],
        "h",
        "f",
    )
    validator = ReadingValidator()
    accepted, rejections = validator.validate(batch, "f")
    assert accepted.seq.tolist() == [0, 1, 5, 8]
    assert [r.source_key for r in rejections] == ["f#2", "f#3", "f#4", "f#6", "f#7"]
    assert [r.reason.split(" timestamp")[0] for r in rejections[:4]] == [
        "out-of-order", "out-of-order", "duplicate", "out-of-order"
    ]
    assert all(r.reason.endswith("not after 2025-12-12T08:00:05.050000+00:00")
               for r in rejections[:3])
    assert rejections[3].reason.endswith("not after 2025-12-12T08:00:06.050000+00:00")
    assert rejections[4].reason == "a_pf = 2: |pf| above 1"
    assert (validator.accepted, validator.rejected) == (4, 5)
