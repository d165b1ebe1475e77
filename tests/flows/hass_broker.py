"""A real Mosquitto on a free loopback port, and a real MQTT client that records what it hears.

Used by the Home Assistant tests and `benchmarks/bench_hass.py`. Mosquitto is Debian's package
(`make test` installs it); under CI a missing broker fails the tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["Heard", "Mosquitto", "Recorder", "free_port", "mosquitto_binary", "wait_until"]


def mosquitto_binary() -> str | None:
    """The broker's path, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.02) -> Any:
    """Polls `check` until it returns something true; fails saying `what` was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


class Mosquitto:
    """One broker process with its own config file, persistence and log in `workdir`."""

    def __init__(self, workdir: Path, port: int | None = None, binary: str | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Mosquitto cannot bind port 0 and say which it got: a port is picked here, and picked
        # again if another process took it before the broker bound it (see `start`).
        self.picked_port = port is None
        self.port = port or free_port()
        self.binary = binary or mosquitto_binary() or "mosquitto"
        self.process: subprocess.Popen[bytes] | None = None
        self.config = self.workdir / "mosquitto.conf"
        self._write_config()

    def _write_config(self) -> None:
        # Started as root, mosquitto drops to its own user, which cannot write here.
        as_root = "user root\n" if os.geteuid() == 0 else ""
        self.config.write_text(
            as_root + f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            # Sessions and retained messages survive a restart that reads the saved file;
            # saved every second, so even a SIGKILL keeps what is older than that.
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> Mosquitto:
        log_path = self.workdir / "mosquitto.log"
        for attempt in range(3):
            offset = log_path.stat().st_size if log_path.exists() else 0
            with log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    [self.binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
                )
            try:
                wait_until(
                    lambda offset=offset: self._running(offset),
                    timeout_s,
                    f"mosquitto to listen on port {self.port}",
                )
                return self
            except RuntimeError:
                said = log_path.read_bytes()[offset:].decode(errors="replace")
                if not (self.picked_port and "in use" in said and attempt < 2):
                    raise
                self.port = free_port()
                self._write_config()
        raise AssertionError("unreachable")

    def _running(self, log_offset: int) -> bool:
        """Whether this broker is up: it says so in its log (a port that accepts connections
        might be another process's, which took the port first) and accepts connections."""
        said = (self.workdir / "mosquitto.log").read_bytes()[log_offset:].decode(errors="replace")
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {said[-2000:]}")
        if " running" not in said:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the broker dies without a goodbye to anyone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, but nothing answers them."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.resume()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@dataclass(frozen=True, slots=True)
class Heard:
    at: float  # time.monotonic() on arrival
    topic: str
    payload: str
    retain: bool


class Recorder:
    """A real MQTT client subscribed to `topics` that keeps every message it receives.

    With `session` (a client id), the broker keeps its subscription and queues its QoS 1
    messages while it is away, across a broker restart that reads the saved state.
    """

    def __init__(
        self, port: int, topics: tuple[str, ...] = ("#",), session: str | None = None
    ) -> None:
        self.port = port
        self.topics = topics
        self.heard: list[Heard] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=session or "",
            clean_session=session is None,
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self.subscribed.set()

    def start(self, timeout_s: float = 10.0) -> Recorder:
        self.client.connect_async("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(timeout_s):
            raise AssertionError(f"the recorder did not subscribe within {timeout_s} s")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        heard = Heard(time.monotonic(), msg.topic, msg.payload.decode(), bool(msg.retain))
        with self.lock:
            self.heard.append(heard)

    def messages(self, topic: str | None = None, since: float = -1e18) -> list[Heard]:
        with self.lock:
            return [h for h in self.heard if (topic is None or h.topic == topic) and h.at >= since]

    def latest(self) -> dict[str, str]:
        """Each topic's last payload, topics whose last payload was empty left out."""
        out: dict[str, str] = {}
        with self.lock:
            for h in self.heard:
                out[h.topic] = h.payload
        return {t: p for t, p in out.items() if p}
