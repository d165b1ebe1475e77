"""The Home Assistant publisher: DuckDB's figures to an MQTT broker, by HA's discovery rules.

An integration is a sink that is never on the flow's critical path (ARCHITECTURE.md). The flow
only nudges the publisher after each write (`FeedingSink`: setting an event, which never
waits); the publisher's own thread reads DuckDB with its own cursor and publishes from there.
DuckDB is the record, so a broker that is down slows nothing and loses nothing: on every
(re)connect, and whenever Home Assistant announces that it started, every config and state is
sent again from what DuckDB holds then, and health alerts resume after the last one sent.

`nilm.hass` decides the topics and payloads; this module owns the broker connection
(paho-mqtt, its network thread reconnecting on its own) and the reading of DuckDB.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import duckdb
import paho.mqtt.client as mqtt
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from paho.mqtt.enums import CallbackAPIVersion

from nilm.hass import (
    APPLIANCE_ENERGY_SQL,
    APPLIANCES_SQL,
    HA_BIRTH_PAYLOAD,
    LATEST_LEGS_SQL,
    MINUTE_POWER_SQL,
    NEW_ALERTS_SQL,
    OPEN_RUNS_SQL,
    PAYLOAD_AVAILABLE,
    PAYLOAD_NOT_AVAILABLE,
    QUEUE_SIZE_SQL,
    EnergyMeter,
    HassTopics,
    HomeFigures,
    StateThrottle,
    alert_payload,
    appliances_from_rows,
    discovery_configs,
    parse_mqtt_url,
    slug,
    state_values,
)
from nilm.health import METRICS
from nilm.now import what_is_on
from nilm.pairing import always_on_base_w
from nilm.settings import MqttSettings, Settings, shard_of

__all__ = ["FeedingSink", "HassPublisher", "feeding", "start_publisher"]

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _version() -> str:
    try:
        return metadata.version("nilm-home")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class HassPublisher:
    """Publishes the homes of one DuckDB connection to Home Assistant over MQTT.

    Parameters
    ----------
    connection
        The process's DuckDB connection; the publisher's thread takes its own cursor.
    settings
        The broker, credentials, TLS, discovery prefix and node id.
    home_ids
        The homes this process's flow writes.
    min_interval_s
        The shortest time between two state messages of one entity.
    refresh_s
        The shortest time between two reads of DuckDB (nudges in between are merged).
    idle_s
        How often DuckDB is read without a nudge (labels the dashboard writes, for instance).
    base_every_s
        How often the always-on base (a day of one-minute means) is recomputed.
    full_every_s
        How often the appliances, their energy and the label queue are read again; power and
        the running devices are read at every round.
    """

    def __init__(
        self,
        connection: duckdb.DuckDBPyConnection,
        settings: MqttSettings,
        home_ids: Sequence[str],
        min_interval_s: float = 1.0,
        refresh_s: float = 0.1,
        idle_s: float = 1.0,
        base_every_s: float = 60.0,
        full_every_s: float = 1.0,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.home_ids = tuple(dict.fromkeys(home_ids))
        self.min_interval_s = min_interval_s
        self.refresh_s = refresh_s
        self.idle_s = idle_s
        self.base_every_s = base_every_s
        self.full_every_s = full_every_s
        self.broker = parse_mqtt_url(settings.url)
        self.topics = HassTopics(settings.discovery_prefix, settings.node_id)
        self.sw_version = _version()
        self.alert_types = sorted(METRICS)
        self.throttle = StateThrottle(min_interval_s)
        self.energy = EnergyMeter()
        # Counters for tests, benchmarks and logs.
        self.counts = {"connects": 0, "configs": 0, "states": 0, "cleared": 0, "alerts": 0}
        self.cycles = 0
        self.cycle_seconds: deque[float] = deque(maxlen=10_000)  # how long each round took
        self.last_error: str | None = None

        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._resend_all = True
        self._broker_configs: dict[str, str] = {}  # retained configs seen under our node id
        self._sent_configs: dict[str, str] = {}
        self._latest_ts: dict[str, datetime] = {}
        self._base: dict[str, tuple[float, float]] = {}  # home → (computed at, base W)
        self._alert_pos: dict[str, tuple[datetime, str]] = {}
        self._last_refresh = -1e9
        self._last_full = -1e9
        self._slow: dict[str, HomeFigures] = {}
        self._worker = threading.Thread(target=self._run, name="hass-publisher", daemon=True)
        self.client = self._make_client()

    # -- the broker connection ---------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        client_id = f"nilm-{self.settings.node_id}-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        # HA shows every entity unavailable when this connection dies without a goodbye.
        client.will_set(self.topics.availability, PAYLOAD_NOT_AVAILABLE, qos=1, retain=True)
        username = self.settings.username or self.broker.username
        password = self.settings.password or self.broker.password
        if username:
            client.username_pw_set(username, password or None)
        if self.settings.tls or self.broker.tls:
            client.tls_set(ca_certs=self.settings.ca_file or None)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        # Alerts wait here (QoS 1) while the broker is away; bounded so memory is too.
        client.max_queued_messages_set(10_000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            log.warning("MQTT broker %s:%s: %s", self.broker.host, self.broker.port, reason)
            return
        self.counts["connects"] += 1
        client.publish(self.topics.availability, PAYLOAD_AVAILABLE, qos=1, retain=True)
        client.subscribe([(self.topics.ha_status, 1), (self.topics.own_configs, 1)])
        with self._lock:
            self._resend_all = True
        self._connected.set()
        self._wake.set()
        log.info("MQTT connected to %s:%s", self.broker.host, self.broker.port)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self._connected.is_set() and not self._stopping.is_set():
            log.warning("MQTT broker connection lost (%s); reconnecting", reason)
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        payload = message.payload.decode("utf-8", errors="replace")
        if message.topic == self.topics.ha_status:
            if payload == HA_BIRTH_PAYLOAD:
                log.info("Home Assistant started: sending every config again")
                with self._lock:
                    self._resend_all = True
                self._wake.set()
            return
        with self._lock:
            if payload:
                self._broker_configs[message.topic] = payload
            else:
                self._broker_configs.pop(message.topic, None)

    @property
    def where(self) -> str:
        """The broker and node id, for logs (never the password)."""
        return f"{self.broker.host}:{self.broker.port} as node {self.settings.node_id!r}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> HassPublisher:
        """Connects in the background and starts publishing; returns at once."""
        # Where alerts start: now, before the broker is reached, so that none raised while it
        # is away are taken for history. Taken here, not in the thread: an alert written
        # between `start()` and the thread's first read was taken for history, and lost.
        cursor = self.connection.cursor()
        try:
            for home_id in self.home_ids:
                try:
                    self._alert_pos[home_id] = self._last_alert(cursor, home_id)
                except duckdb.Error as err:
                    log.warning("Home Assistant publisher: no alert position yet: %s", err)
        finally:
            cursor.close()
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=30)
        self.client.loop_start()
        self._worker.start()
        return self

    def nudge(self) -> None:
        """DuckDB has new rows: read it soon. Never waits (the flow calls this)."""
        self._wake.set()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Says "offline" (a clean stop sends no last will), disconnects, ends the threads."""
        self._stopping.set()
        self._wake.set()
        if self._worker.is_alive():
            self._worker.join(timeout_s)
        if self._connected.is_set():
            info = self.client.publish(
                self.topics.availability, PAYLOAD_NOT_AVAILABLE, qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout=min(timeout_s, 2.0))
            except (RuntimeError, ValueError) as err:
                log.debug("offline message not confirmed: %s", err)
        self.client.disconnect()
        self.client.loop_stop()

    # -- the publishing thread ---------------------------------------------------------------
    def _run(self) -> None:
        cursor = self.connection.cursor()
        try:
            next_due: float | None = None
            while not self._stopping.is_set():
                timeout = self.idle_s
                if next_due is not None:
                    timeout = max(0.0, min(timeout, next_due - time.monotonic()))
                self._wake.wait(timeout)
                self._wake.clear()
                if self._stopping.is_set():
                    break
                if not self._connected.is_set():
                    next_due = None
                    continue
                wait = self._last_refresh + self.refresh_s - time.monotonic()
                if wait > 0:  # merge a burst of nudges into one read
                    next_due = time.monotonic() + wait
                    continue
                self._last_refresh = time.monotonic()
                try:
                    next_due = self._cycle(cursor)
                    self.cycle_seconds.append(time.monotonic() - self._last_refresh)
                    self.last_error = None
                except Exception as err:
                    # Whatever a row or the database throws, the publisher (and with it Home
                    # Assistant's view) must outlive it: say what happened, try again soon.
                    self.last_error = f"{type(err).__name__}: {err}"
                    log.warning("Home Assistant publisher: %s; retrying", self.last_error)
                    next_due = time.monotonic() + self.idle_s
            if self._connected.is_set():
                # The flow has ended: what it wrote last goes out before the goodbye.
                try:
                    self._cycle(cursor, full=True)
                except Exception as err:
                    log.warning("Home Assistant publisher, last round: %s", err)
        finally:
            cursor.close()

    def _publish(self, topic: str, payload: str, retain: bool, queued_ok: bool = False) -> bool:
        """Whether the message went out (or, with `queued_ok`, waits in paho's queue: a QoS 1
        message published while the connection is down is sent when it is back)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if queued_ok and info.rc == mqtt.MQTT_ERR_NO_CONN:
            return True
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _cycle(self, cursor: duckdb.DuckDBPyConnection, full: bool = False) -> float | None:
        with self._lock:
            resend = self._resend_all
        full = full or resend or time.monotonic() - self._last_full >= self.full_every_s
        if full:
            self._last_full = time.monotonic()
        homes = [self._read_home(cursor, home_id, full) for home_id in self.home_ids]
        configs = {
            topic: json.dumps(payload, sort_keys=True)
            for topic, payload in discovery_configs(
                homes, self.topics, self.sw_version, self.alert_types
            ).items()
        }
        with self._lock:
            resend, self._resend_all = self._resend_all, False
            on_broker = dict(self._broker_configs)
        if resend:
            self._sent_configs.clear()
            self.throttle.forget()
        for topic in sorted(configs):
            changed = self._sent_configs.get(topic) != configs[topic]
            if changed and self._publish(topic, configs[topic], retain=True):
                self._sent_configs[topic] = configs[topic]
                self.counts["configs"] += 1
        stale = (set(self._sent_configs) | set(on_broker)) - set(configs)
        for topic in sorted(stale):
            self._clear(topic, self._sent_configs.pop(topic, None) or on_broker.get(topic))
        send, next_due = self.throttle.due(state_values(homes, self.topics), time.monotonic())
        unsent = [topic for topic, payload in send if not self._publish(topic, payload, True)]
        self.throttle.forget(unsent)
        self.counts["states"] += len(send) - len(unsent)
        for home_id in self.home_ids:
            self._publish_alerts(cursor, home_id)
        self.cycles += 1
        return next_due

    def _clear(self, config_topic: str, old_payload: str | None) -> None:
        """An entity that no longer exists: an empty retained config removes it from HA."""
        self._publish(config_topic, "", retain=True)
        with self._lock:
            self._broker_configs.pop(config_topic, None)
        self.counts["cleared"] += 1
        try:
            state_topic = json.loads(old_payload or "{}").get("state_topic")
        except (json.JSONDecodeError, AttributeError):
            state_topic = None
        if isinstance(state_topic, str) and state_topic.startswith(f"{self.topics.node_id}/"):
            self._publish(state_topic, "", retain=True)  # and its retained state with it
            self.throttle.forget([state_topic])
        log.info("Home Assistant: cleared %s", config_topic)

    # -- reading DuckDB ----------------------------------------------------------------------
    def _read_home(
        self, cursor: duckdb.DuckDBPyConnection, home_id: str, full: bool
    ) -> HomeFigures:
        """The home's figures; with `full`, the appliances, energy and label queue are read
        again too (they change less often than power, and cost most of a round)."""
        params = {"home_id": home_id}
        kept = self._slow.get(home_id)
        if full or kept is None:
            appliances = appliances_from_rows(
                home_id, cursor.execute(APPLIANCES_SQL, params).fetchall()
            )
            energy_wh = dict(cursor.execute(APPLIANCE_ENERGY_SQL, params).fetchall())
            energy_kwh = {
                a.name: self.energy.reading(a.key, float(energy_wh.get(a.name) or 0.0) / 1000.0)
                for a in appliances
            }
            (queue,) = cursor.execute(QUEUE_SIZE_SQL, params).fetchone() or (0,)
            kept = HomeFigures(home_id, None, appliances, energy_kwh, int(queue))
            self._slow[home_id] = kept
        since = self._latest_ts.get(home_id, _EPOCH)
        latest = cursor.execute(LATEST_LEGS_SQL, {**params, "since": since}).fetchone()
        if latest is None:
            return kept
        ts, a_w, b_w = latest
        self._latest_ts[home_id] = ts
        result = cursor.execute(OPEN_RUNS_SQL, params)
        names = [d[0] for d in result.description or []]
        runs = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
        legs = {"a": float(a_w) if a_w is not None else float("nan"),
                "b": float(b_w) if b_w is not None else float("nan")}  # fmt: skip
        now = what_is_on(runs, legs, self._always_on(cursor, home_id, ts), at=ts)
        return replace(kept, now=now)

    def _always_on(self, cursor: duckdb.DuckDBPyConnection, home_id: str, latest: Any) -> float:
        computed_at, base = self._base.get(home_id, (-1e9, float("nan")))
        if time.monotonic() - computed_at >= self.base_every_s:
            rows = cursor.execute(
                MINUTE_POWER_SQL, {"home_id": home_id, "latest": latest}
            ).fetchall()
            base = always_on_base_w([r[0] for r in rows if r[0] is not None])
            self._base[home_id] = (time.monotonic(), base)
        return base

    def _last_alert(self, cursor: duckdb.DuckDBPyConnection, home_id: str) -> tuple[datetime, str]:
        # Alerts raised before this process started were announced then (or while HA was not
        # listening): an event entity shows what happens now, so history is not replayed.
        row = cursor.execute(
            "SELECT ts, alert_id FROM alerts WHERE home_id = ? ORDER BY ts DESC, alert_id DESC "
            "LIMIT 1",
            [home_id],
        ).fetchone()
        return (row[0], str(row[1])) if row is not None else (_EPOCH, "")

    def _publish_alerts(self, cursor: duckdb.DuckDBPyConnection, home_id: str) -> None:
        if home_id not in self._alert_pos:
            self._alert_pos[home_id] = self._last_alert(cursor, home_id)
        after_ts, after_id = self._alert_pos[home_id]
        result = cursor.execute(
            NEW_ALERTS_SQL, {"home_id": home_id, "after_ts": after_ts, "after_id": after_id}
        )
        names = [d[0] for d in result.description or []]
        topic = self.topics.state(slug(home_id), "health_alert")
        for values in result.fetchall():
            row = dict(zip(names, values, strict=True))
            # QoS 1: paho keeps the message until the broker acknowledges it, across
            # reconnections. Events are never retained (HA ignores replayed events).
            if not self._publish(topic, alert_payload(row), retain=False, queued_ok=True):
                break
            self._alert_pos[home_id] = (row["ts"], str(row["alert_id"]))
            self.counts["alerts"] += 1


# -- how the flow feeds it -------------------------------------------------------------------
class _FeedingPartition(StatelessSinkPartition[Any]):
    def __init__(self, inner: StatelessSinkPartition[Any], on_written: Callable[[], None]):
        self.inner = inner
        self.on_written = on_written

    def write_batch(self, items: list[Any]) -> None:
        self.inner.write_batch(items)
        self.on_written()

    def close(self) -> None:
        self.inner.close()


class FeedingSink(DynamicSink[Any]):
    """A sink that calls `on_written()` after each batch the wrapped sink has stored."""

    def __init__(self, inner: DynamicSink[Any], on_written: Callable[[], None]) -> None:
        self.inner = inner
        self.on_written = on_written

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FeedingPartition:
        inner = self.inner.build(step_id, worker_index, worker_count)
        return _FeedingPartition(inner, self.on_written)


def feeding(sink: DynamicSink[Any], publisher: HassPublisher | None) -> DynamicSink[Any]:
    """`sink`, nudging `publisher` after every write when there is one."""
    return sink if publisher is None else FeedingSink(sink, publisher.nudge)


def start_publisher(
    connection: duckdb.DuckDBPyConnection, settings: Settings
) -> HassPublisher | None:
    """The publisher for `settings.mqtt`, started; None when `mqtt.url` is empty (off)."""
    if not settings.mqtt.url:
        return None
    publisher = HassPublisher(connection, settings.mqtt, [settings.home_id]).start()
    log.info("Home Assistant: publishing to %s", publisher.where)
    return publisher


def start_publishers(
    connections: Mapping[int, duckdb.DuckDBPyConnection], settings: Settings
) -> dict[int, HassPublisher]:
    """One started publisher per database shard, for the homes that shard stores; none when
    `mqtt.url` is empty. Shards publish under their own node id (`<node_id>-<k>`), because a
    publisher owns every discovery config under its node id."""
    if not settings.mqtt.url:
        return {}
    started: dict[int, HassPublisher] = {}
    for k, con in sorted(connections.items()):
        homes = [
            h.home_id for h in settings.home_list() if shard_of(h.home_id, settings.shards) == k
        ]
        if not homes:
            continue
        own = settings.mqtt
        if settings.shards > 1:
            own = replace(own, node_id=f"{own.node_id}-{k}")
        started[k] = HassPublisher(con, own, homes).start()
        log.info("Home Assistant: publishing %d homes to %s", len(homes), started[k].where)
    return started
