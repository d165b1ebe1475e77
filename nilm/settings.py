"""One frozen `Settings` per process, read from a TOML file and `NILM_*` environment variables.

The entry point loads it and passes it down; nothing reads configuration from anywhere else.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["AgentSettings", "Settings", "load_settings"]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Where the PC finds the Pi agent, and how often it asks."""

    url: str = "http://127.0.0.1:8765"
    token: str = ""
    batch_limit: int = 5000
    poll_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a flow or dashboard process needs to know.

    Examples
    --------
    >>> Settings().min_event_w
    30.0
    >>> load_settings(env={"NILM_HOME_ID": "cabin"}).home_id
    'cabin'
    """

    home_id: str = "home"
    db_path: str = "nilm.duckdb"
    recovery_dir: str = "nilm-recovery"
    # Snapshot often enough that a restart replays little; each snapshot pickles all models.
    snapshot_interval_s: float = 10.0
    min_event_w: float = 30.0
    detector: str = "bocpd"
    # Show events within seconds as provisional rows, refined until final (nilm.provisional).
    provisional_events: bool = True
    voltage_min_v: float = 90.0
    voltage_max_v: float = 150.0
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 5006
    dashboard_token: str = ""
    label_poll_s: float = 1.0
    # The home's offset from UTC, for the time-of-day feature (fixed: a DST change shifts it).
    utc_offset_s: int = 0
    # A batch model file (`nilm retrain --out`) that answers before River does; "" for none.
    # "{home_id}" in it is replaced by each home's id.
    batch_model_path: str = ""
    agent: AgentSettings = field(default_factory=AgentSettings)


def _coerce(value: str, like: object) -> object:
    if isinstance(like, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def _apply(base: Any, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(base)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"unknown setting {key!r} in {where}; known: {sorted(known)}")
        current = getattr(base, key)
        if isinstance(value, Mapping):
            changes[key] = _apply(current, value, f"{where}.{key}")
        elif isinstance(value, str) and not isinstance(current, str):
            changes[key] = _coerce(value, current)
        else:
            changes[key] = value
    return replace(base, **changes)


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Defaults, then the TOML file, then `NILM_*` variables, then `overrides`.

    `NILM_AGENT__TOKEN` sets `agent.token` (a double underscore enters a section).
    """
    settings = Settings()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist; see README 'Configuration'")
        with p.open("rb") as f:
            settings = _apply(settings, tomllib.load(f), str(p))
    env_values: dict[str, Any] = {}
    for key, value in (os.environ if env is None else env).items():
        if not key.startswith("NILM_"):
            continue
        parts = key[5:].lower().split("__")
        target = env_values
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    settings = _apply(settings, env_values, "environment")
    final: Settings = _apply(
        settings, {k: v for k, v in overrides.items() if v is not None}, "arguments"
    )
    return final
