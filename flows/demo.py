"""The demo's household member: confirms a few events of each device once the history is in.

A first look at the demo should show devices, not a wall of unknowns, and show the label loop
working: the simulator knows the truth, so a simulated user confirms the first few events of
each device through the same `labels` table the dashboard writes, and the running flow learns
from them. The rest of the queue is left for the person at the dashboard.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import duckdb

from flows.sources import SimulatorSource
from nilm.matching import match_events
from nilm.records import TruthEvent
from nilm.simulator import DAY_S, HouseholdSimulator

__all__ = ["DemoUser", "pick_confirmations"]

log = logging.getLogger(__name__)


class _StoredEvent:
    __slots__ = ("delta_p_w", "event_id", "legs", "ts")

    def __init__(self, event_id: str, ts: datetime, legs: str, delta_p_w: float) -> None:
        self.event_id = event_id
        self.ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        self.legs = legs
        self.delta_p_w = delta_p_w


def pick_confirmations(
    stored: Sequence[tuple[str, datetime, str, float]],
    truth: Sequence[TruthEvent],
    per_device: int,
) -> list[tuple[str, str]]:
    """(event_id, device) for the first `per_device` detected events of each true device."""
    events = [_StoredEvent(*row) for row in stored]
    result = match_events(events, truth, tolerance_s=2.0, min_w=0.0)
    chosen: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for i, j in result.pairs:
        chosen[truth[j].device].append((events[i].ts, events[i].event_id))
    return [
        (event_id, device)
        for device, found in sorted(chosen.items())
        for _, event_id in sorted(found)[:per_device]
    ]


class DemoUser(threading.Thread):
    """Waits for the simulated history to be stored, then confirms `per_device` events each."""

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        simulator: SimulatorSource,
        per_device: int,
    ) -> None:
        super().__init__(name="demo-user", daemon=True)
        self.connection = connection
        self.simulator = simulator
        self.per_device = per_device
        self.stopped = threading.Event()
        self.confirmed = 0

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        from dashboards.store import DataStore

        history_s = int(self.simulator.backfill_days * DAY_S)
        # The history is in once the source has moved past it and the detector's lag is over.
        while self.simulator.position_s < history_s + 120 and not self.simulator.done:
            if self.stopped.wait(0.5):
                return
        config = self.simulator.config
        sim = HouseholdSimulator(config)
        truth = [e for d in range(int(self.simulator.backfill_days + 0.999)) for e in sim.day(d)[1]]
        cursor = self.connection.cursor()
        try:
            (already,) = cursor.execute("SELECT count(*) FROM labels").fetchone() or (0,)
            if already:
                log.info("the demo's database has %d labels already: no new confirmations", already)
                return
            stored = cursor.execute(
                "SELECT event_id, ts, legs, delta_p_w FROM events WHERE home_id = ? ORDER BY ts",
                [config.home_id],
            ).fetchall()
            store = DataStore(self.connection)
            for event_id, device in pick_confirmations(stored, truth, self.per_device):
                if self.stopped.is_set():
                    return
                store.confirm_label(event_id, device, config.home_id)
                self.confirmed += 1
        except (duckdb.Error, ValueError) as err:
            log.warning("the demo's user could not confirm labels: %s", err)
            return
        finally:
            cursor.close()
        log.info(
            "the demo's user confirmed %d events (%d per device)", self.confirmed, self.per_device
        )
