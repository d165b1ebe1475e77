"""The agent's one frozen configuration: defaults, then a TOML file, then the command line.

The TOML file has the same names as the command-line options (with `_` for `-`), at the top level
or under an `[agent]` table; see `pi_agent/deploy/agent.example.toml`. The token may also come from
a file (`token_file`) or the `NILM_AGENT_TOKEN` environment variable, so that it need not appear
on a command line that every user of the Pi can read with `ps`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["TRANSPORTS", "AgentConfig", "load_config"]

TRANSPORTS = ("ble", "http", "sim")


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the agent process needs to know.

    Times are in seconds unless the name says otherwise. `speed` (sim only) is virtual seconds
    per real second, so the poller runs every `interval_s / speed` real seconds; `backfill`
    (sim only) produces the readings from `start` up to now at once, then goes on live.
    """

    transport: str = "sim"
    host: str = "127.0.0.1"
    port: int = 8765
    spool: str = "agent-spool.sqlite"
    token: str = ""
    token_file: str = ""
    interval_s: float = 1.0
    request_timeout_s: float = 2.0
    # Under the 1 s poll interval, so each reading is committed (and served) as it comes: an
    # event reaches the PC within seconds. One small WAL commit a second is what that costs
    # the SD card; a longer interval batches readings and delays them by up to its length.
    commit_interval_s: float = 0.5
    retention_days: float = 30.0
    max_spool_mb: float = 512.0
    # BLE
    ble_address: str = ""
    ble_name: str = ""
    ble_adapter: str = ""
    ble_connect_timeout_s: float = 20.0
    # HTTP
    shelly_url: str = ""
    # Simulator
    seed: int = 0
    home_id: str = "home"
    start: str = ""
    speed: float = 1.0
    duration_s: float = 0.0
    backfill: bool = False
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport {self.transport!r} is not one of {TRANSPORTS}")
        if self.interval_s <= 0 or self.speed <= 0 or self.commit_interval_s < 0:
            raise ValueError(
                f"interval_s ({self.interval_s}) and speed ({self.speed}) must be positive and "
                f"commit_interval_s ({self.commit_interval_s}) not negative"
            )
        if self.transport == "ble" and not (self.ble_address or self.ble_name):
            raise ValueError("the ble transport needs ble_address (AA:BB:...) or ble_name")
        if self.transport == "http" and not self.shelly_url:
            raise ValueError("the http transport needs shelly_url, e.g. http://192.168.1.50")
        if self.start:
            self.start_utc()

    def start_utc(self) -> datetime | None:
        """`start` as a UTC datetime, or None when the simulation starts now."""
        if not self.start:
            return None
        ts = datetime.fromisoformat(self.start.replace("Z", "+00:00"))
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)

    def resolved_token(self, env: Mapping[str, str] | None = None) -> str:
        """The bearer token from `token`, `token_file` or `NILM_AGENT_TOKEN`, in that order."""
        if self.token:
            return self.token
        if self.token_file:
            return Path(self.token_file).read_text().strip()
        return (os.environ if env is None else env).get("NILM_AGENT_TOKEN", "").strip()


def load_config(path: str | Path | None = None, **overrides: Any) -> AgentConfig:
    """Defaults, then the TOML file at `path`, then `overrides` that are not None."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"agent config {p} does not exist; see agent.example.toml")
        with p.open("rb") as f:
            data = tomllib.load(f)
        values.update(data.get("agent", data) if isinstance(data.get("agent"), dict) else data)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(AgentConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown agent settings {unknown}; known: {sorted(known)}")
    return replace(AgentConfig(), **values)
