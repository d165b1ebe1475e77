"""One frozen `Settings` per process, read from a TOML file and `NILM_*` environment variables.

The entry point loads it and passes it down; nothing reads configuration from anywhere else.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

__all__ = [
    "AgentSettings",
    "HomeSettings",
    "MqttSettings",
    "Settings",
    "load_settings",
    "shard_of",
]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """Where the PC finds the Pi agent, and how often it asks."""

    url: str = "http://127.0.0.1:8765"
    token: str = ""
    batch_limit: int = 5000
    poll_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class HomeSettings:
    """One home of a fleet: its id, its Pi agent, its clock and optionally its own batch model.

    `batch_model_path` empty means the fleet's `Settings.batch_model_path` (where "{home_id}"
    is replaced by this home's id).
    """

    home_id: str = "home"
    agent: AgentSettings = field(default_factory=AgentSettings)
    utc_offset_s: int = 0
    batch_model_path: str = ""


def shard_of(home_id: str, shards: int) -> int:
    """The database shard that stores `home_id`: the same in every process and every run.

    Python's `hash` of a string changes with the process's hash seed, so a digest is used (a
    CRC keeps the parity of names that differ in one digit, "home-0" … "home-3" all even).

    >>> shard_of("home", 1), shard_of("home-7", 4) == shard_of("home-7", 4)
    (0, True)
    """
    if shards < 1:
        raise ValueError(f"shards={shards} must be at least 1")
    digest = hashlib.blake2b(home_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """The MQTT broker that Home Assistant listens on, and how to appear there.

    `url` ("mqtt_url") is `mqtt://HOST[:PORT]` or `mqtts://HOST[:PORT]` (TLS); empty turns the
    publisher off. `node_id` names this publisher in every topic: give each process that
    publishes to one broker its own (it owns every discovery config under it).
    """

    url: str = ""
    username: str = ""
    password: str = ""
    tls: bool = False
    # A CA certificate file (PEM) for a broker with a private CA; "" uses the system's CAs.
    ca_file: str = ""
    discovery_prefix: str = "homeassistant"
    node_id: str = "nilm"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a flow or dashboard process needs to know.

    Examples
    --------
    >>> Settings().min_event_w
    30.0
    >>> load_settings(env={"NILM_HOME_ID": "cabin"}).home_id
    'cabin'
    >>> load_settings(env={"NILM_MQTT__URL": "mqtt://10.0.0.2:1883"}).mqtt.url
    'mqtt://10.0.0.2:1883'
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
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    # Many homes on one flow (`[[homes]]` in the TOML file); empty: the one home above, read
    # from `agent`.
    homes: tuple[HomeSettings, ...] = ()
    # Homes are stored in this many DuckDB files: `db_path` itself when 1, else `db_path` with
    # "-<k>" before its suffix for k = 0..shards-1 (see `shard_paths`).
    shards: int = 1

    def home_list(self) -> tuple[HomeSettings, ...]:
        """The homes this flow serves: the configured fleet, or the single home.

        >>> [h.home_id for h in Settings(home_id="cabin").home_list()]
        ['cabin']
        """
        if self.homes:
            return self.homes
        return (HomeSettings(self.home_id, self.agent, self.utc_offset_s, self.batch_model_path),)

    def home(self, home_id: str) -> HomeSettings:
        """The settings of one home; a home not configured gets the fleet's defaults."""
        for h in self.home_list():
            if h.home_id == home_id:
                return h
        return HomeSettings(home_id, self.agent, self.utc_offset_s, self.batch_model_path)

    def model_path(self, home_id: str) -> str:
        """The batch model file that home `home_id` serves ("" for none)."""
        path = self.home(home_id).batch_model_path or self.batch_model_path
        return path.replace("{home_id}", home_id)

    def shard_paths(self) -> tuple[str, ...]:
        """The database files, shard k at index k.

        >>> Settings(db_path="x/nilm.duckdb", shards=2).shard_paths()
        ('x/nilm-0.duckdb', 'x/nilm-1.duckdb')
        """
        if self.shards <= 1:
            return (self.db_path,)
        p = Path(self.db_path)
        return tuple(str(p.with_name(f"{p.stem}-{k}{p.suffix}")) for k in range(self.shards))

    def db_path_for(self, home_id: str) -> str:
        """The database file that stores `home_id`."""
        return self.shard_paths()[shard_of(home_id, self.shards)]


def _coerce(value: str, like: object) -> object:
    if isinstance(like, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def _homes(values: Any, base: Settings, where: str) -> tuple[HomeSettings, ...]:
    if not isinstance(values, list | tuple) or not all(isinstance(v, Mapping) for v in values):
        raise ValueError(f"{where}.homes must be a list of tables ([[homes]] in TOML)")
    homes = []
    for i, v in enumerate(values):
        if "home_id" not in v:
            raise ValueError(f"{where}.homes[{i}] has no home_id")
        default = HomeSettings(utc_offset_s=base.utc_offset_s, agent=base.agent)
        homes.append(_apply(default, v, f"{where}.homes[{i}]"))
    ids = [h.home_id for h in homes]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"{where}.homes lists {dupes} more than once; each home_id once")
    return tuple(homes)


def _apply(base: Any, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(base)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"unknown setting {key!r} in {where}; known: {sorted(known)}")
        current = getattr(base, key)
        if key == "homes" and isinstance(base, Settings):
            continue  # last: a home's defaults are the fleet's settings, whatever the key order
        if isinstance(value, Mapping):
            changes[key] = _apply(current, value, f"{where}.{key}")
        elif isinstance(value, str) and not isinstance(current, str):
            changes[key] = _coerce(value, current)
        else:
            changes[key] = value
    if "homes" in values and isinstance(base, Settings):
        homes = values["homes"]
        fleet = replace(base, **changes)
        changes["homes"] = homes if isinstance(homes, tuple) else _homes(homes, fleet, where)
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
