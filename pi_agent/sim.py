"""The household simulator dressed as a Shelly Pro 3EM, and the transport that asks it.

`SimShelly` answers `EM.GetStatus` at any second and JSON-RPC frames the way Shelly firmware
does, so the agent's `/rpc` endpoint and the tests' fake GATT peer both speak for it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from nilm.records import READING_COLUMNS, to_epoch_us
from nilm.simulator import DAY_S, HouseholdSimulator, SimulatorConfig
from pi_agent.transports import EndOfSimulation, TransportError

__all__ = ["SimShelly", "SimTransport"]

logger = logging.getLogger(__name__)


class SimShelly:
    """The household simulator dressed as a Shelly Pro 3EM: `EM.GetStatus` at any second.

    The meter is exact at whole seconds: the simulator's logger gaps and timestamp jitter are
    switched off (`gaps_per_day=0`, `jitter_s=0`), because here the agent is the logger, and
    its poller records whatever gaps really happen.

    Parameters
    ----------
    config
        The household; `start` is when the simulated meter starts.
    duration_s
        Seconds after `config.start` at which the meter stops answering (0: never).

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> sim = SimShelly(SimulatorConfig(seed=1, start=datetime(2026, 1, 5, tzinfo=UTC)))
    >>> status = sim.status_at(datetime(2026, 1, 5, 0, 0, 10, tzinfo=UTC))
    >>> status["a_voltage"] > 100, status["id"]
    (True, 0)
    """

    def __init__(self, config: SimulatorConfig, duration_s: float = 0.0) -> None:
        self.config = SimulatorConfig(
            **{
                **{f: getattr(config, f) for f in config.__dataclass_fields__},
                "gaps_per_day": 0.0,
                "jitter_s": 0.0,
            }
        )
        self.duration_s = duration_s
        self.simulator = HouseholdSimulator(self.config)
        self._start_us = to_epoch_us(self.config.start)
        self._day_index = -1
        self._values: np.ndarray | None = None
        self.now = self.config.start

    def second_of(self, at: datetime) -> int:
        return (to_epoch_us(at) - self._start_us) // 1_000_000

    def values_at(self, second: int) -> tuple[float, ...]:
        """The 12 reading values at second `second` after the start."""
        if second < 0:
            raise TransportError(f"the simulated meter starts at {self.config.start}")
        if self.duration_s and second >= self.duration_s:
            raise EndOfSimulation(f"the simulation ended after {self.duration_s:.0f} s")
        day, index = divmod(second, DAY_S)
        if day != self._day_index:
            batch, _ = self.simulator.day(day)
            self._values = np.column_stack([batch.columns[c] for c in READING_COLUMNS])
            self._day_index = day
        assert self._values is not None
        return tuple(float(v) for v in self._values[index])

    def status_at(self, at: datetime) -> dict[str, Any]:
        """What `EM.GetStatus?id=0` would say at `at` (a Pro 3EM's field set, leg c idle)."""
        values = dict(zip(READING_COLUMNS, self.values_at(self.second_of(at)), strict=True))
        self.now = at  # the last second answered: what `/rpc` reports between polls
        status: dict[str, Any] = {"id": 0, **values}
        status.update(
            c_current=0.0, c_voltage=0.0, c_act_power=0.0, c_aprt_power=0.0, c_pf=0.0,
            c_freq=values["a_freq"], n_current=None,
            total_current=round(values["a_current"] + values["b_current"], 3),
            total_act_power=round(values["a_act_power"] + values["b_act_power"], 3),
            total_aprt_power=round(values["a_aprt_power"] + values["b_aprt_power"], 3),
            user_calibrated_phase=[],
        )  # fmt: skip
        return status

    def rpc(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one JSON-RPC 2.0 request frame the way Shelly firmware does."""
        rid = request.get("id")
        method = request.get("method")
        base: dict[str, Any] = {"id": rid, "src": "shellypro3em-sim"}
        if "src" in request:
            base["dst"] = request["src"]
        try:
            if method == "EM.GetStatus":
                return {**base, "result": self.status_at(self.now)}
            if method == "Shelly.GetDeviceInfo":
                return {
                    **base,
                    "result": {
                        "id": "shellypro3em-sim",
                        "model": "SPEM-003CEBEU",
                        "gen": 2,
                        "app": "Pro3EM",
                        "ver": "1.4.4-sim",
                    },
                }
        except (TransportError, EndOfSimulation) as err:
            return {**base, "error": {"code": -114, "message": str(err)}}
        return {**base, "error": {"code": 404, "message": f"No handler for {method}"}}


class SimTransport:
    """Asks a `SimShelly` directly, in process: the simulator at the poller's virtual time."""

    name = "sim"

    def __init__(self, shelly: SimShelly) -> None:
        self.shelly = shelly
        self._requests = 0

    async def connect(self) -> None:
        return None

    async def em_status(self, at: datetime) -> Mapping[str, Any]:
        self._requests += 1
        return self.shelly.status_at(at)

    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {"requests": self._requests, "virtual_now": self.shelly.now.isoformat()}
