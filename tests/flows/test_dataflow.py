"""The dataflow, list in and list out, with Bytewax's testing source and sink."""

from __future__ import annotations

import math
from collections import Counter

from bytewax.testing import TestingSink, TestingSource, run_main

from flows.dataflow import get_flow
from nilm.parsing import parse_logger_rows
from nilm.records import ReadingChunk
from nilm.settings import Settings
from nilm.simulator import HouseholdSimulator, SimulatorConfig
from tests.nilm.test_parsing import good_row


def run(items: list) -> list:
    out: list = []
    run_main(get_flow(Settings(), TestingSource(items), TestingSink(out)))
    return out


def test_readings_and_rejections_reach_the_sink_with_reasons() -> None:
    batch, parse_rejections = parse_logger_rows(
        [good_row(0), good_row(1, a_pf=3.0), good_row(2), good_row(3, a_voltage="?")], "h", "f"
    )
    out = run([("h", ReadingChunk("f", batch, tuple(parse_rejections)))])
    tables = Counter(table for table, _ in out)
    readings = [v for t, v in out if t == "readings"]
    assert sum(len(b) for b in readings) == 2 and tables["rejected"] == 2
    reasons = sorted(v.reason for t, v in out if t == "rejected")
    assert reasons == ["a_pf = 3: |pf| above 1", "field 'a_voltage' = '?' is not a number"]


def test_a_simulated_hour_gives_its_events_keyed_by_home() -> None:
    sim = HouseholdSimulator(SimulatorConfig(seed=4, home_id="casa"))
    chunks = [("casa", ReadingChunk("sim", b)) for b, _ in sim.iter_batches(0.25, 600)]
    out = run(chunks)
    events = [row for table, row in out if table == "events" and not row["provisional"]]
    truth = [e for _, t in sim.iter_batches(0.25, 600) for e in t if abs(e.delta_p_w) >= 50]
    assert events and all(row["home_id"] == "casa" for row in events)
    assert len({row["event_id"] for row in events}) == len(events)
    # The baseline detector is no oracle, but it must see most big steps.
    matched = sum(
        any(abs((row["ts"] - e.ts).total_seconds()) <= 2 for row in events) for e in truth
    )
    assert matched >= 0.8 * len(truth)


def test_two_homes_are_kept_apart() -> None:
    def chunks(home: str, seed: int) -> list:
        sim = HouseholdSimulator(SimulatorConfig(seed=seed, home_id=home))
        return [(home, ReadingChunk("sim", b)) for b, _ in sim.iter_batches(0.05, 600)]

    out = run([x for pair in zip(chunks("x", 1), chunks("y", 2), strict=True) for x in pair])
    homes = Counter(b.home_id for t, b in out if t == "readings" for _ in range(len(b)))
    assert set(homes) == {"x", "y"}
    # Interleaving the homes must not make one home's readings look out of order.
    assert not [v for t, v in out if t == "rejected"]
    assert all(math.isfinite(row["delta_p_w"]) for t, row in out if t == "events")
