"""Home Assistant through MQTT discovery: what to announce and what to send, as pure data.

Home Assistant's MQTT discovery reads a retained JSON config per entity under
`<prefix>/<component>/<node_id>/<object_id>/config`; the entity then follows its `state_topic`.
This module decides the topics, the config payloads and the state values from figures the
publisher (`flows/hass.py`) reads out of DuckDB with the SQL below; it talks to no broker.

One HA device stands for each home (whole-house power per leg, always-on, unexplained, the
label queue, health alerts) and one for each recognised appliance (power, energy, running),
linked to its home by `via_device`. What is shown is declared as data (`HOME_ENTITIES`,
`APPLIANCE_ENTITIES`), not as near-identical classes.

An appliance is known by the event that first taught it, not by its name: renaming a device
(every one of its events relabelled to the new name, or its cluster renamed) keeps that event,
so its entities keep their unique ids and topics and HA updates their name instead of adding a
second device.

Key names follow HA core's MQTT schemas (`homeassistant/components/mqtt/schemas.py`,
`sensor.py`, `binary_sensor.py`, `event.py`): `state_topic` is required by every component
here, `event_types` by `event`, and a `device` only binds an entity that has a `unique_id`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from nilm.now import MINUTE_POWER_SQL, OPEN_ACTIVATIONS_SQL, NowSnapshot

__all__ = [
    "APPLIANCES_SQL",
    "APPLIANCE_ENERGY_SQL",
    "APPLIANCE_ENTITIES",
    "HA_BIRTH_PAYLOAD",
    "HOME_ENTITIES",
    "LATEST_LEGS_SQL",
    "MINUTE_POWER_SQL",
    "NEW_ALERTS_SQL",
    "OPEN_RUNS_SQL",
    "PAYLOAD_AVAILABLE",
    "PAYLOAD_NOT_AVAILABLE",
    "QUEUE_SIZE_SQL",
    "Appliance",
    "BrokerAddress",
    "EnergyMeter",
    "EntityDescription",
    "HassTopics",
    "HomeFigures",
    "StateThrottle",
    "alert_payload",
    "appliances_from_rows",
    "discovery_configs",
    "parse_mqtt_url",
    "slug",
    "state_values",
]

MANUFACTURER = "nilm-home"
HOME_MODEL = "Shelly Pro 3EM, whole house"
APPLIANCE_MODEL = "Recognised appliance"
PAYLOAD_AVAILABLE = "online"
PAYLOAD_NOT_AVAILABLE = "offline"
# HA's own birth message, sent on `<prefix>/status` when it (re)starts.
HA_BIRTH_PAYLOAD = "online"

# HA's discovery topic matcher accepts node and object ids of these characters only.
_ID_CHARS = re.compile(r"^[a-zA-Z0-9_-]+$")


# -- the broker ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where the broker is, from an `mqtt://` or `mqtts://` URL."""

    host: str
    port: int
    tls: bool
    username: str = ""
    password: str = ""


def parse_mqtt_url(url: str) -> BrokerAddress:
    """The broker of `mqtt://[USER[:PASSWORD]@]HOST[:PORT]` (1883) or `mqtts://…` (TLS, 8883).

    Raises `ValueError` saying what is wrong and what to write instead.

    Parameters
    ----------
    url
        The `mqtt.url` setting or `nilm demo --mqtt`.

    Examples
    --------
    >>> parse_mqtt_url("mqtt://127.0.0.1:1884")
    BrokerAddress(host='127.0.0.1', port=1884, tls=False, username='', password='')
    >>> parse_mqtt_url("mqtts://ha:secret@broker.lan").port
    8883
    >>> parse_mqtt_url("http://broker")
    Traceback (most recent call last):
    ...
    ValueError: MQTT URL 'http://broker' must start with mqtt:// or mqtts://, e.g. mqtt://127.0.0.1:1883
    """
    example = "e.g. mqtt://127.0.0.1:1883"
    parts = urlsplit(url.strip())
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"MQTT URL {url!r} must start with mqtt:// or mqtts://, {example}")
    try:
        port = parts.port
    except ValueError as err:
        raise ValueError(f"MQTT URL {url!r} has a bad port: {err}; {example}") from err
    if not parts.hostname:
        raise ValueError(f"MQTT URL {url!r} names no host; {example}")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=port if port is not None else (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )


def slug(text: str) -> str:
    """A topic- and id-safe form of a name: lowercase letters, digits and single underscores.

    Names with nothing safe in them get a short digest, so two of them never meet.

    Examples
    --------
    >>> slug("Heat pump (garage)")
    'heat_pump_garage'
    >>> slug("Küche")
    'k_che'
    >>> slug("***")
    'x3f709783'
    """
    out = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if out:
        return out
    return "x" + hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


# -- what is shown ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EntityDescription:
    """One entity of a device: its HA component and the config keys that describe it."""

    key: str
    component: str
    name: str
    device_class: str | None = None
    unit: str | None = None
    state_class: str | None = None
    icon: str | None = None
    precision: int | None = None


HOME_ENTITIES: tuple[EntityDescription, ...] = (
    EntityDescription("power", "sensor", "Power", "power", "W", "measurement", precision=0),
    EntityDescription("power_a", "sensor", "Power leg A", "power", "W", "measurement", precision=0),
    EntityDescription("power_b", "sensor", "Power leg B", "power", "W", "measurement", precision=0),
    EntityDescription(
        "always_on", "sensor", "Always-on power", "power", "W", "measurement", precision=0
    ),
    EntityDescription(
        "unexplained", "sensor", "Unexplained power", "power", "W", "measurement", precision=0
    ),
    EntityDescription(
        "label_queue",
        "sensor",
        "Events waiting for a label",
        state_class="measurement",
        icon="mdi:tag-search",
    ),
    EntityDescription("health_alert", "event", "Health alert", icon="mdi:heart-pulse"),
)

APPLIANCE_ENTITIES: tuple[EntityDescription, ...] = (
    EntityDescription("power", "sensor", "Power", "power", "W", "measurement", precision=0),
    EntityDescription(
        "energy", "sensor", "Energy", "energy", "kWh", "total_increasing", precision=3
    ),
    EntityDescription("running", "binary_sensor", "Running", "running"),
)


# -- the figures, read from DuckDB by whoever owns it ----------------------------------------
# A recognised appliance: every device name an event of the home carries now (its latest label,
# else its prediction), with the event that names it first: the first event ever labelled so
# (labels are never deleted), else its earliest event. `$home_id` is bound by the caller.
APPLIANCES_SQL = """
WITH labelled AS (
    SELECT event_id, min(label_id) AS first_label_id, arg_max(device, label_id) AS confirmed
    FROM labels GROUP BY event_id
), named AS (
    SELECT e.event_id, e.ts, coalesce(l.confirmed, e.device) AS device, l.first_label_id
    FROM events e LEFT JOIN labelled l USING (event_id)
    WHERE e.home_id = $home_id
)
SELECT device, event_id AS anchor_event_id FROM (
    SELECT device, event_id, row_number() OVER (
        PARTITION BY device ORDER BY first_label_id NULLS LAST, ts, event_id) AS k
    FROM named WHERE device IS NOT NULL
) WHERE k = 1 ORDER BY device
"""

# The open runs, named by their on event's latest label when they have one: the Live page's list.
OPEN_RUNS_SQL = OPEN_ACTIVATIONS_SQL

# Energy of finished runs per device (Wh): a run belongs to the device its on event is labelled
# (the label is the truth), else to the device it was paired as.
APPLIANCE_ENERGY_SQL = """
SELECT coalesce(l.confirmed, a.device) AS device, sum(a.energy_wh) AS energy_wh
FROM activations a LEFT JOIN (
    SELECT event_id, arg_max(device, label_id) AS confirmed FROM labels GROUP BY event_id
) l ON l.event_id = a.on_event_id
WHERE a.home_id = $home_id AND a.end_ts IS NOT NULL AND NOT coalesce(a.abandoned, FALSE)
    AND a.energy_wh > 0
GROUP BY 1 HAVING coalesce(l.confirmed, a.device) IS NOT NULL ORDER BY 1
"""

# Events that wait for a confirmation (the dashboard's Label page queue).
QUEUE_SIZE_SQL = """
SELECT count(*) FROM events e WHERE e.home_id = $home_id AND NOT coalesce(e.labelled, FALSE)
    AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.event_id = e.event_id)
"""

# The latest reading at or after `$since` (the last one seen, so the scan stays short).
LATEST_LEGS_SQL = """
SELECT ts, a_act_power, b_act_power FROM readings
WHERE home_id = $home_id AND ts >= $since ORDER BY ts DESC LIMIT 1
"""

# Health alerts after a (ts, alert_id) position, oldest first.
NEW_ALERTS_SQL = """
SELECT alert_id, device, ts, metric, since_ts, before_value, after_value, message FROM alerts
WHERE home_id = $home_id AND (ts, alert_id) > ($after_ts, $after_id) ORDER BY ts, alert_id
"""


@dataclass(frozen=True, slots=True)
class Appliance:
    """A recognised appliance of a home: its current name and the event that identifies it."""

    home_id: str
    name: str
    anchor_event_id: str

    @property
    def key(self) -> str:
        """The appliance's id in topics and unique ids: stable while its name changes."""
        digest = hashlib.blake2b(
            f"{self.home_id}|{self.anchor_event_id}".encode(), digest_size=5
        ).hexdigest()
        return f"appliance_{digest}"


def appliances_from_rows(home_id: str, rows: Iterable[Sequence[Any]]) -> tuple[Appliance, ...]:
    """Appliances from rows of `APPLIANCES_SQL`, by name; the unknown-device name is left out.

    Examples
    --------
    >>> [a.name for a in appliances_from_rows("home", [("oven", "e2"), ("fridge", "e1")])]
    ['fridge', 'oven']
    """
    found = {
        str(name): Appliance(home_id, str(name), str(anchor))
        for name, anchor in rows
        if name and str(name) != "(unknown)"
    }
    return tuple(found[name] for name in sorted(found))


@dataclass(frozen=True, slots=True)
class HomeFigures:
    """What one home shows in HA at one moment.

    `energy_kwh` is keyed by appliance name; `now` is `nilm.now.what_is_on`'s snapshot (None
    before the first reading).
    """

    home_id: str
    now: NowSnapshot | None
    appliances: tuple[Appliance, ...]
    energy_kwh: Mapping[str, float] = field(default_factory=dict)
    queue_size: int | None = None


# -- topics and payloads ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HassTopics:
    """Every topic one publisher uses: discovery under `prefix`, its own under `node_id`."""

    prefix: str = "homeassistant"
    node_id: str = "nilm"

    def __post_init__(self) -> None:
        if not _ID_CHARS.match(self.node_id):
            raise ValueError(
                f"MQTT node_id {self.node_id!r} may hold only letters, digits, '_' and '-' "
                "(Home Assistant's discovery topics allow no others); e.g. node_id = 'nilm'"
            )
        if not self.prefix or any(c in self.prefix for c in "+#") or self.prefix.endswith("/"):
            raise ValueError(
                f"MQTT discovery prefix {self.prefix!r} must be a topic without wildcards or a "
                "trailing '/', e.g. 'homeassistant'"
            )

    @property
    def availability(self) -> str:
        """Where "online" is retained while the publisher runs, and its last will "offline"."""
        return f"{self.node_id}/availability"

    @property
    def ha_status(self) -> str:
        """Where HA announces that it (re)started."""
        return f"{self.prefix}/status"

    @property
    def own_configs(self) -> str:
        """A subscription matching every discovery config this publisher owns."""
        return f"{self.prefix}/+/{self.node_id}/+/config"

    def config(self, component: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{self.node_id}/{object_id}/config"

    def state(self, *parts: str) -> str:
        return "/".join((self.node_id, *parts))

    def home_identifier(self, home_id: str) -> str:
        return f"{self.node_id}_{slug(home_id)}"


def _entity_config(
    entity: EntityDescription,
    object_id: str,
    state_topic: str,
    device: dict[str, Any],
    topics: HassTopics,
    origin: dict[str, str],
    event_types: Sequence[str],
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": entity.name,
        "unique_id": f"{topics.node_id}_{object_id}",
        "state_topic": state_topic,
        "availability_topic": topics.availability,
        "payload_available": PAYLOAD_AVAILABLE,
        "payload_not_available": PAYLOAD_NOT_AVAILABLE,
        "device": device,
        "origin": origin,
    }
    if entity.device_class is not None:
        config["device_class"] = entity.device_class
    if entity.unit is not None:
        config["unit_of_measurement"] = entity.unit
    if entity.state_class is not None:
        config["state_class"] = entity.state_class
    if entity.icon is not None:
        config["icon"] = entity.icon
    if entity.precision is not None:
        config["suggested_display_precision"] = entity.precision
    if entity.component == "binary_sensor":
        config["payload_on"] = "ON"
        config["payload_off"] = "OFF"
    if entity.component == "event":
        config["event_types"] = list(event_types)
    return config


def discovery_configs(
    homes: Iterable[HomeFigures],
    topics: HassTopics,
    sw_version: str,
    alert_types: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Every discovery config the homes need now: config topic → payload (to send retained).

    Parameters
    ----------
    homes
        The figures of each home (only its appliances matter here).
    topics
        The prefix and node id.
    sw_version
        This program's version, shown on every device.
    alert_types
        The health alert kinds (`nilm.health.METRICS`): the `event` entity's `event_types`.

    Examples
    --------
    >>> home = HomeFigures("home", None, (Appliance("home", "fridge", "e1"),))
    >>> configs = discovery_configs([home], HassTopics(), "1.0", ["delta_p_w"])
    >>> len(configs), sorted(configs)[0]
    (10, 'homeassistant/binary_sensor/nilm/home_appliance_b159615346_running/config')
    >>> energy = configs["homeassistant/sensor/nilm/home_appliance_b159615346_energy/config"]
    >>> energy["device"]["name"], energy["device"]["via_device"], energy["state_class"]
    ('fridge', 'nilm_home', 'total_increasing')
    """
    origin = {"name": MANUFACTURER, "sw_version": sw_version}
    out: dict[str, dict[str, Any]] = {}
    for home in homes:
        home_slug = slug(home.home_id)
        home_id = topics.home_identifier(home.home_id)
        home_device = {
            "identifiers": [home_id],
            "name": f"{MANUFACTURER} {home.home_id}",
            "manufacturer": MANUFACTURER,
            "model": HOME_MODEL,
            "sw_version": sw_version,
        }
        for entity in HOME_ENTITIES:
            object_id = f"{home_slug}_{entity.key}"
            out[topics.config(entity.component, object_id)] = _entity_config(
                entity,
                object_id,
                topics.state(home_slug, entity.key),
                home_device,
                topics,
                origin,
                alert_types,
            )
        for appliance in home.appliances:
            device = {
                "identifiers": [f"{home_id}_{appliance.key}"],
                "name": appliance.name,
                "manufacturer": MANUFACTURER,
                "model": APPLIANCE_MODEL,
                "sw_version": sw_version,
                "via_device": home_id,
            }
            for entity in APPLIANCE_ENTITIES:
                object_id = f"{home_slug}_{appliance.key}_{entity.key}"
                out[topics.config(entity.component, object_id)] = _entity_config(
                    entity,
                    object_id,
                    topics.state(home_slug, appliance.key, entity.key),
                    device,
                    topics,
                    origin,
                    alert_types,
                )
    return out


def _watts(value: float) -> str | None:
    return f"{value:.1f}" if math.isfinite(value) else None


def state_values(homes: Iterable[HomeFigures], topics: HassTopics) -> dict[str, str]:
    """The state of every sensor and binary sensor now: state topic → payload.

    An appliance that is not running draws 0 W; a figure not known yet (no reading) is left
    out rather than sent as 0.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> from nilm.now import what_is_on
    >>> t = datetime(2026, 1, 5, 8, tzinfo=UTC)
    >>> run = {"device": "fridge", "legs": "a", "start_ts": t, "power_w": 95.0}
    >>> now = what_is_on([run], {"a": 300.0, "b": 200.0}, always_on_w=150.0, at=t)
    >>> home = HomeFigures("home", now, (Appliance("home", "fridge", "e1"),), {"fridge": 1.25}, 4)
    >>> states = state_values([home], HassTopics())
    >>> states["nilm/home/appliance_b159615346/power"], states["nilm/home/unexplained"]
    ('95.0', '255.0')
    >>> states["nilm/home/appliance_b159615346/running"], states["nilm/home/label_queue"]
    ('ON', '4')
    """
    out: dict[str, str] = {}
    for home in homes:
        home_slug = slug(home.home_id)
        now = home.now
        running: dict[str, float] = {}
        if now is not None:
            running = {d.device: d.power_w for d in now.running}
            figures = {
                "power": now.total_w if now.legs_w else math.nan,
                "power_a": now.legs_w.get("a", math.nan),
                "power_b": now.legs_w.get("b", math.nan),
                "always_on": now.always_on_w if now.legs_w else math.nan,
                "unexplained": now.unexplained_w if now.legs_w else math.nan,
            }
            for key, value in figures.items():
                text = _watts(value)
                if text is not None:
                    out[topics.state(home_slug, key)] = text
        if home.queue_size is not None:
            out[topics.state(home_slug, "label_queue")] = str(int(home.queue_size))
        for appliance in home.appliances:
            power = running.get(appliance.name, 0.0) if now is not None else math.nan
            text = _watts(power)
            if text is not None:
                out[topics.state(home_slug, appliance.key, "power")] = text
                out[topics.state(home_slug, appliance.key, "running")] = (
                    "ON" if appliance.name in running else "OFF"
                )
            energy = home.energy_kwh.get(appliance.name, 0.0)
            out[topics.state(home_slug, appliance.key, "energy")] = f"{energy:.3f}"
    return out


def alert_payload(row: Mapping[str, Any]) -> str:
    """The `event` entity's message for one `alerts` row: `event_type` is the metric.

    Examples
    --------
    >>> from datetime import UTC, datetime
    >>> t = datetime(2026, 1, 5, 8, tzinfo=UTC)
    >>> alert = {"alert_id": "a1", "device": "fridge", "ts": t, "metric": "run_duration_s",
    ...          "since_ts": t, "before_value": 600.0, "after_value": 900.0,
    ...          "message": "fridge: run time rose"}
    >>> json.loads(alert_payload(alert))["event_type"]
    'run_duration_s'
    """

    def iso(value: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value

    return json.dumps(
        {
            "event_type": str(row["metric"]),
            "device": row.get("device"),
            "message": row.get("message"),
            "alert_id": row.get("alert_id"),
            "ts": iso(row.get("ts")),
            "since": iso(row.get("since_ts")),
            "before": row.get("before_value"),
            "after": row.get("after_value"),
        },
        sort_keys=True,
    )


# -- when to send ----------------------------------------------------------------------------
class StateThrottle:
    """Sends a state when it changes, at most once every `min_interval_s` per topic.

    Time comes in as data (a monotonic clock reading), so the rule is tested without waiting.

    Parameters
    ----------
    min_interval_s
        The shortest time between two messages on one topic.

    Examples
    --------
    >>> throttle = StateThrottle(1.0)
    >>> throttle.due({"t": "1"}, now_s=10.0)
    ([('t', '1')], None)
    >>> throttle.due({"t": "2"}, now_s=10.4)
    ([], 11.0)
    >>> throttle.due({"t": "2"}, now_s=11.0)
    ([('t', '2')], None)
    >>> throttle.due({"t": "2"}, now_s=20.0)
    ([], None)
    """

    def __init__(self, min_interval_s: float = 1.0) -> None:
        self.min_interval_s = min_interval_s
        self.sent: dict[str, str] = {}
        self.sent_at: dict[str, float] = {}

    def due(
        self, desired: Mapping[str, str], now_s: float
    ) -> tuple[list[tuple[str, str]], float | None]:
        """The (topic, payload) pairs to send now, and when the next held-back one falls due.

        What is returned counts as sent; call `forget` when it could not be.
        """
        send: list[tuple[str, str]] = []
        next_due: float | None = None
        for topic in sorted(desired):
            payload = desired[topic]
            if self.sent.get(topic) == payload:
                continue
            ready_at = self.sent_at.get(topic, -math.inf) + self.min_interval_s
            if now_s >= ready_at:
                send.append((topic, payload))
                self.sent[topic] = payload
                self.sent_at[topic] = now_s
            else:
                next_due = ready_at if next_due is None else min(next_due, ready_at)
        return send, next_due

    def forget(self, topics: Iterable[str] | None = None) -> None:
        """Treat `topics` (default: all) as never sent, so they go out again when next due."""
        if topics is None:
            self.sent.clear()
            return
        for topic in topics:
            self.sent.pop(topic, None)


class EnergyMeter:
    """Keeps each energy total from going down, as HA's `total_increasing` requires.

    A correction that moves runs from one device to another lowers that device's sum in DuckDB;
    HA would read the drop as a meter reset and count everything again, so the total holds
    still until the device's real use passes it.

    Examples
    --------
    >>> meter = EnergyMeter()
    >>> [meter.reading("fridge", kwh) for kwh in (1.0, 1.5, 1.2, 1.6)]
    [1.0, 1.5, 1.5, 1.6]
    """

    def __init__(self) -> None:
        self.highest: dict[str, float] = {}

    def reading(self, key: str, kwh: float) -> float:
        value = max(self.highest.get(key, 0.0), kwh if math.isfinite(kwh) else 0.0)
        self.highest[key] = value
        return value
