"""Home Assistant through MQTT discovery, against a real Mosquitto and a real subscriber.

Each test starts its own broker on a free loopback port and a DuckDB file holding a small house
(readings, events, labels, runs), runs the publisher on it and listens with a real client.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from bytewax.testing import run_main

from flows.cli import main
from flows.database import open_database
from flows.dataflow import get_flow
from flows.hass import FeedingSink, HassPublisher
from flows.sink import DuckDBSink
from flows.sources import SimulatorSource
from nilm.health import METRICS
from nilm.settings import MqttSettings, Settings
from nilm.simulator import HouseholdSimulator, SimulatorConfig
from tests.flows.hass_broker import Mosquitto, Recorder, mosquitto_binary, wait_until

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5, 8, tzinfo=UTC)
PREFIX = "homeassistant"
CONFIG_TOPIC = re.compile(
    r"^homeassistant/(sensor|binary_sensor|event)/nilm/[a-zA-Z0-9_-]+/config$"
)
HOME_CONFIGS = 7  # power, two legs, always-on, unexplained, label queue, health alert
PER_APPLIANCE = 3  # power, energy, running
HOME_STATES = ("power", "power_a", "power_b", "always_on", "unexplained", "label_queue")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    if mosquitto_binary() is None:
        message = "mosquitto is not installed: apt-get install mosquitto (make test does it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    server = Mosquitto(tmp_path / "broker").start()
    yield server
    server.stop()


# -- a small house in DuckDB ------------------------------------------------------------------
def add_event(
    con: duckdb.DuckDBPyConnection,
    event_id: str,
    ts: datetime,
    delta_p_w: float,
    legs: str = "a",
    device: str | None = None,
    labelled: bool = False,
) -> None:
    con.execute(
        "INSERT INTO events (event_id, home_id, ts, legs, delta_p_w, device, labelled) "
        "VALUES (?, 'home', ?, ?, ?, ?, ?)",
        [event_id, ts, legs, delta_p_w, device, labelled],
    )


def add_label(con: duckdb.DuckDBPyConnection, event_id: str, device: str) -> None:
    con.execute(
        "INSERT INTO labels (event_id, device, created_at, home_id, source) "
        "VALUES (?, ?, ?, 'home', 'test')",
        [event_id, device, datetime.now(UTC)],
    )


def add_run(
    con: duckdb.DuckDBPyConnection,
    activation_id: str,
    device: str | None,
    on_event_id: str,
    start: datetime,
    power_w: float | None,
    end: datetime | None = None,
    energy_wh: float | None = None,
    legs: str = "a",
) -> None:
    con.execute(
        "INSERT INTO activations (activation_id, home_id, device, legs, on_event_id, start_ts, "
        "end_ts, power_w, energy_wh) VALUES (?, 'home', ?, ?, ?, ?, ?, ?, ?)",
        [activation_id, device, legs, on_event_id, start, end, power_w, energy_wh],
    )


def add_readings(
    con: duckdb.DuckDBPyConnection, start: datetime, seconds: int, a_w: float, b_w: float
) -> None:
    con.execute(
        "INSERT OR IGNORE INTO readings (home_id, ts, a_act_power, b_act_power) "
        "SELECT 'home', $start + to_seconds(i), $a, $b FROM range($n) r(i)",
        {"start": start, "n": seconds, "a": a_w, "b": b_w},
    )


@pytest.fixture
def house(tmp_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A fridge (labelled once, predicted once, running), an oven (running, one finished run)
    and an unknown load, over half an hour of readings: a 150 W base, then 1300 W + 1500 W."""
    con = open_database(tmp_path / "house.duckdb")
    add_readings(con, T0 - timedelta(minutes=30), 20 * 60, 100.0, 50.0)
    add_readings(con, T0 - timedelta(minutes=10), 10 * 60, 1300.0, 1500.0)
    add_event(con, "e_f1", T0 - timedelta(hours=2), 95.0, device="fridge", labelled=True)
    add_event(con, "e_o0", T0 - timedelta(hours=5), 2400.0, "ab", "oven", labelled=True)
    add_event(con, "e_f2", T0 - timedelta(hours=1), 96.0, device="fridge")
    add_event(con, "e_o1", T0 - timedelta(minutes=9), 2400.0, "ab", "oven", labelled=True)
    add_event(con, "e_u", T0 - timedelta(minutes=8), 60.0, "b")
    add_label(con, "e_f1", "fridge")
    add_label(con, "e_o0", "oven")
    add_label(con, "e_o1", "oven")
    add_run(con, "r_f1", "fridge", "e_f1", T0 - timedelta(hours=2), 95.0,
            T0 - timedelta(hours=2) + timedelta(minutes=10), 16.0)  # fmt: skip
    add_run(con, "r_o0", "oven", "e_o0", T0 - timedelta(hours=5), 2400.0,
            T0 - timedelta(hours=4, minutes=30), 1200.0, "ab")  # fmt: skip
    add_run(con, "r_f2", "fridge", "e_f2", T0 - timedelta(hours=1), 96.0)
    add_run(con, "r_o1", "oven", "e_o1", T0 - timedelta(minutes=9), 2400.0, legs="ab")
    add_run(con, "r_u", None, "e_u", T0 - timedelta(minutes=8), 60.0, legs="b")
    yield con
    con.close()


def make_publisher(con: duckdb.DuckDBPyConnection, broker: Mosquitto) -> HassPublisher:
    return HassPublisher(
        con, MqttSettings(url=broker.url), ["home"], refresh_s=0.05, idle_s=0.2
    ).start()


def configs(recorder: Recorder) -> dict[str, dict[str, Any]]:
    return {
        t: json.loads(p)
        for t, p in recorder.latest().items()
        if t.startswith(f"{PREFIX}/") and t.endswith("/config")
    }


def appliance_configs(recorder: Recorder, name: str) -> dict[str, dict[str, Any]]:
    return {t: c for t, c in configs(recorder).items() if c["device"]["name"] == name}


def appliance_state(recorder: Recorder, name: str, key: str) -> str | None:
    """The latest state of appliance `name`'s entity `key` (power, energy, running)."""
    for config in appliance_configs(recorder, name).values():
        if config["unique_id"].endswith(f"_{key}"):
            return recorder.latest().get(config["state_topic"])
    return None


# -- tests ------------------------------------------------------------------------------------
def test_discovery_configs_carry_the_keys_home_assistant_requires(
    broker: Mosquitto, house: duckdb.DuckDBPyConnection
) -> None:
    publisher = make_publisher(house, broker)
    try:
        live = Recorder(broker.port).start()
        expected = HOME_CONFIGS + 2 * PER_APPLIANCE
        wait_until(lambda: len(configs(live)) == expected, 10, f"{expected} discovery configs")
        # A client that comes later (HA after a restart) finds them retained.
        late = Recorder(broker.port).start()
        # Retained messages reach a new subscriber in no set order: wait for all it reads.
        wait_until(
            lambda: len(configs(late)) == expected
            and late.latest().get("nilm/availability") == "online",
            10,
            "the retained configs and the availability",
        )
        retained = {h.topic for h in late.messages() if h.retain}
        found = configs(late)
        assert set(found) <= retained
        live.stop()
        late.stop()
    finally:
        publisher.stop()

    home_ids = {"nilm_home"}
    unique_ids = [c["unique_id"] for c in found.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    for topic, config in found.items():
        assert CONFIG_TOPIC.match(topic), topic
        component = topic.split("/")[1]
        # Every component here is read-only: MQTT_RO_SCHEMA requires a state_topic; a device
        # binds only an entity with a unique_id, and needs identifiers.
        assert config["state_topic"].startswith("nilm/home/")
        assert config["unique_id"] == "nilm_" + topic.split("/")[3]
        assert config["availability_topic"] == "nilm/availability"
        assert (config["payload_available"], config["payload_not_available"]) == (
            "online",
            "offline",
        )
        device = config["device"]
        assert device["identifiers"] and device["manufacturer"] == "nilm-home"
        assert device["name"] and device["model"] and device["sw_version"]
        assert config["origin"]["name"] == "nilm-home"
        if device["identifiers"] != ["nilm_home"]:
            assert device["via_device"] in home_ids  # an appliance hangs off its home
        if config.get("device_class") == "power":
            assert (config["unit_of_measurement"], config["state_class"]) == ("W", "measurement")
        if config.get("device_class") == "energy":
            assert (config["unit_of_measurement"], config["state_class"]) == (
                "kWh",
                "total_increasing",
            )
        if component == "binary_sensor":
            assert (config["payload_on"], config["payload_off"]) == ("ON", "OFF")
            assert config["device_class"] == "running"
        if component == "event":
            assert config["event_types"] == sorted(METRICS)
    by_device = {}
    for config in found.values():
        by_device.setdefault(config["device"]["name"], []).append(config)
    assert sorted(by_device) == ["fridge", "nilm-home home", "oven"]
    fridge = by_device["fridge"]
    assert sorted(c.get("device_class") for c in fridge) == ["energy", "power", "running"]


def test_states_match_the_power_and_energy_duckdb_holds_at_the_same_moment(
    broker: Mosquitto, house: duckdb.DuckDBPyConnection
) -> None:
    recorder = Recorder(broker.port).start()
    publisher = make_publisher(house, broker)
    try:
        # One round's messages reach a subscriber in no set order: wait for every state read.
        home_states = [f"nilm/home/{k}" for k in HOME_STATES]
        wait_until(
            lambda: all(
                appliance_state(recorder, name, key) is not None
                for name in ("fridge", "oven")
                for key in ("power", "running", "energy")
            )
            and all(t in recorder.latest() for t in home_states),
            10,
            "every appliance's and the home's states",
        )
        running = dict(
            house.execute(
                "SELECT device, sum(power_w) FROM activations WHERE home_id = 'home' "
                "AND end_ts IS NULL AND device IS NOT NULL GROUP BY device"
            ).fetchall()
        )
        energy = dict(
            house.execute(
                "SELECT device, sum(energy_wh) / 1000 FROM activations WHERE home_id = 'home' "
                "AND end_ts IS NOT NULL GROUP BY device"
            ).fetchall()
        )
        _ts, a_w, b_w = house.execute(
            "SELECT ts, a_act_power, b_act_power FROM readings ORDER BY ts DESC LIMIT 1"
        ).fetchone() or (None, 0.0, 0.0)
        (base,) = house.execute(
            "SELECT quantile_cont(p, 0.02) FROM (SELECT avg(a_act_power + b_act_power) AS p "
            "FROM readings GROUP BY epoch_us(ts) // 60000000)"
        ).fetchone() or (0.0,)
        for name in ("fridge", "oven"):
            assert float(appliance_state(recorder, name, "power") or "nan") == running[name]
            assert appliance_state(recorder, name, "running") == "ON"
            assert float(appliance_state(recorder, name, "energy") or "nan") == pytest.approx(
                energy[name], abs=1e-3
            )
        states = recorder.latest()
        assert float(states["nilm/home/power_a"]) == a_w
        assert float(states["nilm/home/power_b"]) == b_w
        assert float(states["nilm/home/power"]) == a_w + b_w
        assert float(states["nilm/home/always_on"]) == pytest.approx(base, abs=0.1)
        explained = sum(running.values()) + 60.0  # the unknown load runs too
        assert float(states["nilm/home/unexplained"]) == pytest.approx(
            a_w + b_w - base - explained, abs=0.1
        )
        assert states["nilm/home/label_queue"] == "2"  # e_f2 and e_u wait for a label

        # The oven finishes: its run closes with 800 Wh, its leg power falls.
        house.execute(
            "UPDATE activations SET end_ts = ?, energy_wh = 800.0 WHERE activation_id = 'r_o1'",
            [T0],
        )
        add_readings(house, T0, 5, 100.0, 160.0)
        publisher.nudge()
        # Each entity is throttled on its own, so they change in no set order: wait for all.
        wait_until(
            lambda: [appliance_state(recorder, "oven", k) for k in ("running", "power", "energy")]
            == ["OFF", "0.0", "2.000"],
            10,
            "the oven off, at 0 W, with 2 kWh",
        )
        wait_until(lambda: recorder.latest()["nilm/home/power_b"] == "160.0", 5, "leg b")
    finally:
        publisher.stop()
        recorder.stop()


def test_a_rename_updates_the_entities_and_a_merged_device_is_cleared(
    broker: Mosquitto, house: duckdb.DuckDBPyConnection
) -> None:
    recorder = Recorder(broker.port).start()
    publisher = make_publisher(house, broker)
    try:
        wait_until(lambda: len(configs(recorder)) == 13, 10, "13 configs")
        fridge_topics = set(appliance_configs(recorder, "fridge"))
        oven_topics = set(appliance_configs(recorder, "oven"))
        oven_states = {c["state_topic"] for c in appliance_configs(recorder, "oven").values()}
        all_topics = set(configs(recorder))

        # Renamed: every fridge event relabelled, as the dashboard does.
        add_label(house, "e_f1", "refrigerator")
        add_label(house, "e_f2", "refrigerator")
        publisher.nudge()
        wait_until(
            lambda: set(appliance_configs(recorder, "refrigerator")) == fridge_topics,
            10,
            "the fridge's configs renamed in place",
        )
        assert appliance_configs(recorder, "fridge") == {}
        assert set(configs(recorder)) == all_topics  # updated, not duplicated
        assert appliance_state(recorder, "refrigerator", "power") == "96.0"
        assert appliance_state(recorder, "refrigerator", "energy") == "0.016"

        # Merged: the oven's events are relabelled too; the oven no longer exists.
        add_label(house, "e_o0", "refrigerator")
        add_label(house, "e_o1", "refrigerator")
        publisher.nudge()
        # A config is cleared before its state: wait for both.
        wait_until(
            lambda: (oven_topics | oven_states)
            <= {h.topic for h in recorder.messages() if h.payload == ""},
            10,
            "the oven's configs and states cleared",
        )
        assert set(configs(recorder)) == all_topics - oven_topics
        wait_until(
            lambda: [appliance_state(recorder, "refrigerator", k) for k in ("power", "energy")]
            == ["2496.0", "1.216"],
            10,
            "the merged device's power and energy",
        )
    finally:
        publisher.stop()
        recorder.stop()


def test_broker_killed_and_restarted_mid_run_loses_nothing_and_gets_every_config_again(
    broker: Mosquitto, house: duckdb.DuckDBPyConnection
) -> None:
    # A persistent session: the broker queues what the recorder misses while it is away.
    recorder = Recorder(broker.port, session="hass-test-recorder").start()
    publisher = make_publisher(house, broker)
    try:
        wait_until(lambda: len(configs(recorder)) == 13, 10, "13 configs")
        saved = broker.workdir / "mosquitto.db"

        # A change after the recorder subscribed; the next save (each second) holds its session.
        changed_at = time.time_ns()
        recorder.client.publish("test/marker", "1", qos=1, retain=True)
        wait_until(
            lambda: saved.exists() and saved.stat().st_mtime_ns > changed_at,
            10,
            "the broker to save its state",
        )
        broker.kill()
        wait_until(lambda: not publisher.connected, 10, "the publisher to notice")

        # While the broker is down the flow goes on: a kettle is named and runs, an alert.
        add_event(house, "e_k", T0 + timedelta(seconds=30), 1500.0, device="kettle")
        add_label(house, "e_k", "kettle")
        add_run(house, "r_k", "kettle", "e_k", T0 + timedelta(seconds=30), 1500.0)
        house.execute(
            "INSERT INTO alerts (alert_id, home_id, device, ts, metric, since_ts, before_value, "
            "after_value, message) VALUES ('al1', 'home', 'fridge', ?, 'run_duration_s', ?, "
            "600, 900, 'fridge: run time rose from 10 min to 15 min')",
            [T0 + timedelta(seconds=31), T0],
        )
        publisher.nudge()
        restarted = Mosquitto(broker.workdir, port=broker.port).start()
        broker.process = restarted.process  # the fixture stops it
        since = restarted_at = max(h.at for h in recorder.messages())

        def resent() -> bool:
            fresh = [h for h in recorder.messages(since=since) if h.topic.endswith("/config")]
            return len({h.topic for h in fresh if h.payload}) >= 16

        wait_until(resent, 20, "every config, the kettle's too, sent again")
        wait_until(
            lambda: appliance_state(recorder, "kettle", "power") == "1500.0",
            10,
            "the kettle's power",
        )
        alerts = wait_until(
            lambda: recorder.messages("nilm/home/health_alert", since=restarted_at),
            10,
            "the alert raised while the broker was down",
        )
        event = json.loads(alerts[0].payload)
        assert event["event_type"] == "run_duration_s" and event["device"] == "fridge"
        assert not alerts[0].retain  # HA ignores replayed (retained) events
        # The publisher counts an alert after handing it to paho, which may deliver it first.
        wait_until(lambda: publisher.counts["alerts"] >= 1, 10, "the alert counted")
        assert publisher.counts["alerts"] == 1
        assert publisher.counts["connects"] == 2
    finally:
        publisher.stop()
        recorder.stop()


def test_home_assistant_birth_message_gets_every_config_sent_again(
    broker: Mosquitto, house: duckdb.DuckDBPyConnection
) -> None:
    recorder = Recorder(broker.port).start()
    publisher = make_publisher(house, broker)
    try:
        wait_until(lambda: len(configs(recorder)) == 13, 10, "13 configs")
        assert len([h for h in recorder.messages() if h.topic.endswith("/config")]) == 13
        since = max(h.at for h in recorder.messages())
        recorder.client.publish(f"{PREFIX}/status", "online", qos=1)

        def again() -> int:
            fresh = recorder.messages(since=since)
            return len({h.topic for h in fresh if h.topic.endswith("/config") and h.payload})

        wait_until(lambda: again() == 13, 10, "13 configs sent again")
        wait_until(lambda: publisher.counts["configs"] == 26, 10, "the resent configs counted")
        # Something else on that topic ("offline" when HA stops) sends nothing. The publisher
        # hears it on its own connection, in its own time: wait until it has handled it, then
        # for a whole round that began after that.
        heard = []
        handle = publisher.client.on_message

        def spy(client: Any, userdata: Any, message: Any) -> None:
            handle(client, userdata, message)
            heard.append(message.payload)

        publisher.client.on_message = spy
        recorder.client.publish(f"{PREFIX}/status", "offline", qos=1)
        wait_until(lambda: b"offline" in heard, 10, "the publisher to hear offline")
        cycles = publisher.cycles
        publisher.nudge()
        wait_until(lambda: publisher.cycles >= cycles + 2, 10, "a round after it")
        assert publisher.counts["configs"] == 26
    finally:
        publisher.stop()
        recorder.stop()


def test_availability_goes_offline_by_last_will_when_the_process_dies(
    broker: Mosquitto, tmp_path: Path
) -> None:
    script = textwrap.dedent(
        f"""
        import threading
        from flows.database import open_database
        from flows.hass import HassPublisher
        from nilm.settings import MqttSettings
        con = open_database({str(tmp_path / "other.duckdb")!r})
        HassPublisher(con, MqttSettings(url={broker.url!r}), ["home"]).start()
        threading.Event().wait()
        """
    )
    recorder = Recorder(broker.port, topics=("nilm/availability",)).start()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path)
    try:
        wait_until(lambda: recorder.latest().get("nilm/availability") == "online", 60, "online")
        process.kill()
        process.wait(10)
        wait_until(
            lambda: recorder.latest().get("nilm/availability") == "offline", 10, "the last will"
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        recorder.stop()


def test_a_clean_stop_says_offline_and_bad_rows_do_not_stop_the_publisher(
    broker: Mosquitto, house: duckdb.DuckDBPyConnection
) -> None:
    add_readings(house, T0 + timedelta(minutes=5), 1, 500.0, float("nan"))
    house.execute(
        "UPDATE readings SET b_act_power = NULL WHERE ts = ?", [T0 + timedelta(minutes=5)]
    )
    add_run(house, "r_bad", "oven", "e_o1", T0, None)  # a run with no power yet
    recorder = Recorder(broker.port).start()
    publisher = make_publisher(house, broker)
    try:
        wait_until(
            lambda: recorder.latest().get("nilm/home/power_a") == "500.0"
            and appliance_state(recorder, "oven", "power") == "2400.0",
            10,
            "leg a and the oven's power",
        )
        assert publisher.last_error is None
    finally:
        publisher.stop()
    wait_until(
        lambda: recorder.latest().get("nilm/availability") == "offline", 10, "offline on stop"
    )
    recorder.stop()
    # Every round, the last one at the stop included, has been sent by now.
    assert "nilm/home/power_b" not in recorder.latest()  # unknown, not 0


def test_a_state_changes_at_most_once_a_second(
    broker: Mosquitto, house: duckdb.DuckDBPyConnection
) -> None:
    topic = "nilm/home/power_a"
    recorder = Recorder(broker.port, topics=(topic,)).start()
    publisher = HassPublisher(
        house, MqttSettings(url=broker.url), ["home"], refresh_s=0.05, idle_s=0.2
    )
    # When the publisher let each of the leg's values go: its own clock, not the arrival
    # times at the subscriber, which a loaded machine spreads and bunches.
    released: list[tuple[float, str]] = []
    due = publisher.throttle.due

    def spy(desired: Any, now_s: float) -> Any:
        send, next_due = due(desired, now_s)
        released.extend((now_s, payload) for t, payload in send if t == topic)
        return send, next_due

    publisher.throttle.due = spy  # type: ignore[method-assign]
    publisher.start()
    try:
        wait_until(lambda: recorder.messages(), 10, "the first leg power")
        start = T0 + timedelta(hours=1)
        # For 2.5 s, a new reading every 20 ms or so, each with a different power.
        i, until = 0, time.monotonic() + 2.5
        while time.monotonic() < until:
            add_readings(house, start + timedelta(seconds=i), 1, 1000.0 + i, 100.0)
            publisher.nudge()
            i += 1
            time.sleep(0.02)  # pacing the writes, not waiting for a result
        last = f"{1000.0 + i - 1:.1f}"
        wait_until(lambda: recorder.latest().get(topic) == last, 5, last)
        # What the subscriber heard is what the publisher let go, and nothing else.
        assert [h.payload for h in recorder.messages()] == [p for _, p in released]
        assert len(released) >= 3
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(released)]
        assert min(gaps) >= 1.0, gaps
    finally:
        publisher.stop()
        recorder.stop()


def test_a_dead_broker_does_not_hold_the_flow_and_publishing_resumes(
    broker: Mosquitto, tmp_path: Path
) -> None:
    con = open_database(tmp_path / "flow.duckdb")
    # Subscribed before the broker hangs, with a session the broker keeps for it.
    recorder = Recorder(broker.port, session="dead-broker-recorder").start()
    broker.pause()  # connections are accepted, never answered
    publisher = make_publisher(con, broker)
    try:
        # An alert raised before the publisher ever reached the broker is not history.
        con.execute(
            "INSERT INTO alerts (alert_id, home_id, device, ts, metric, message) VALUES "
            "('al0', 'home', 'dryer', ?, 'delta_p_w', 'dryer: power when switched on fell')",
            [T0],
        )
        settings = Settings(db_path=str(tmp_path / "flow.duckdb"))
        source = SimulatorSource(SimulatorConfig(seed=3), days=0.05, backfill_days=0.05)
        nudges = []

        def nudge() -> None:
            nudges.append(1)
            publisher.nudge()

        run_main(get_flow(settings, source, FeedingSink(DuckDBSink(con), nudge)))
        day, _ = HouseholdSimulator(source.config).day(0)
        produced = int((day.seq < int(0.05 * 86400)).sum())
        stored = con.execute(
            "SELECT (SELECT count(*) FROM readings) + (SELECT count(*) FROM rejected)"
        ).fetchone()
        assert stored == (produced,)  # every reading kept while the broker hung
        assert nudges and not publisher.connected and publisher.counts["configs"] == 0

        broker.resume()
        (a_w, b_w) = con.execute(
            "SELECT a_act_power, b_act_power FROM readings ORDER BY ts DESC LIMIT 1"
        ).fetchone() or (0.0, 0.0)
        wait_until(
            lambda: recorder.latest().get("nilm/home/power") == f"{a_w + b_w:.1f}",
            45,
            "the house's power once the broker answers",
        )
        assert len(configs(recorder)) >= HOME_CONFIGS
        alert = wait_until(lambda: recorder.messages("nilm/home/health_alert"), 10, "the alert")
        assert json.loads(alert[0].payload)["device"] == "dryer"
    finally:
        broker.resume()
        publisher.stop()
        recorder.stop()
        con.close()


def test_nilm_demo_with_mqtt_puts_every_learned_device_in_home_assistant(
    broker: Mosquitto, tmp_path: Path
) -> None:
    db = tmp_path / "demo.duckdb"
    recorder = Recorder(broker.port).start()
    try:
        code = main(["demo", "--db", str(db), "--days", "0.6", "--backfill-days", "0.5",
                     "--speed", "3000", "--no-dashboard", "--confirm-per-device", "2",
                     "--mqtt", broker.url])  # fmt: skip
        assert code == 0
        con = duckdb.connect(str(db), read_only=True)
        learned = {
            str(r[0])
            for r in con.execute(
                "SELECT DISTINCT coalesce(l.device, e.device) FROM events e LEFT JOIN "
                "(SELECT event_id, arg_max(device, label_id) AS device FROM labels "
                "GROUP BY event_id) l USING (event_id) WHERE coalesce(l.device, e.device) "
                "IS NOT NULL"
            ).fetchall()
        }
        con.close()
        assert len(learned) >= 5
        # The demo has stopped; what it published may still be on its way to the subscriber.
        wait_until(
            lambda: recorder.latest().get("nilm/availability") == "offline",
            10,
            "offline once the demo stopped",
        )
        wait_until(
            lambda: {c["device"]["name"] for c in configs(recorder).values()}
            == learned | {"nilm-home home"}
            and all(appliance_state(recorder, name, "energy") is not None for name in learned),
            10,
            "a config and an energy state for every learned device",
        )
    finally:
        recorder.stop()


def test_a_bad_broker_url_is_one_clear_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["demo", "--db", str(tmp_path / "d.duckdb"), "--days", "0.01",
                 "--no-dashboard", "--mqtt", "http://127.0.0.1:1883"])  # fmt: skip
    assert code == 2
    assert "must start with mqtt:// or mqtts://" in capsys.readouterr().err
