"""End to end on real processes: sim agent → loopback → `nilm run` → DuckDB, through SIGKILLs.

A simulated hour at high speed. At seeded random moments the agent and `nilm run` are each
killed with SIGKILL and restarted, and the link between them goes dark for a few seconds (a
loopback proxy refuses connections and cuts the open ones). Afterwards the `readings` table must
equal the simulator's hour exactly: every second once, with its exact values and its seq.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest

from nilm.records import READING_COLUMNS, to_epoch_us
from nilm.simulator import HouseholdSimulator, SimulatorConfig
from tests.pi_agent.procs import TOKEN, free_port, healthz, start_agent

START = datetime(2026, 1, 5, 8, tzinfo=UTC)
SECONDS = 3600
SPEED = 150.0
SEED = 11


class Proxy:
    """A TCP relay from `port` to `target` that can be taken down and brought back."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self.listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            listener, self.listener = self.listener, None
            conns, self.conns = self.conns, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()  # the agent is down: the PC sees a dropped connection
                continue
            upstream.settimeout(None)
            with self.lock:
                if self.listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def start_pc(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`nilm run --config FILE`, or the reading path alone with AGENT_E2E_PC=minimal."""
    if os.environ.get("AGENT_E2E_PC") == "minimal":
        cmd = [sys.executable, "-m", "tests.pi_agent.minimal_pc", str(config)]
    else:
        cmd = [str(Path(sys.executable).with_name("nilm")), "run", "--config", str(config)]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def expected_hour() -> tuple[np.ndarray, np.ndarray]:
    config = SimulatorConfig(seed=SEED, start=START, gaps_per_day=0.0, jitter_s=0.0)
    batch, _ = HouseholdSimulator(config).day(0)
    batch = batch[np.arange(SECONDS)]
    values = np.column_stack([batch.columns[c] for c in READING_COLUMNS])
    return batch.ts_us, values


def _ranges(values: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in values:
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


@pytest.mark.slow
def test_every_reading_lands_once_through_kills_and_an_outage(tmp_path: Path) -> None:
    rng = random.Random(2026)
    agent_port, proxy_port = free_port(), free_port()
    db = tmp_path / "nilm.duckdb"
    config = tmp_path / "pc.toml"
    config.write_text(
        f'home_id = "home"\ndb_path = "{db}"\nrecovery_dir = "{tmp_path / "recovery"}"\n'
        f"dashboard_port = {free_port()}\n"
        f'[agent]\nurl = "http://127.0.0.1:{proxy_port}"\ntoken = "{TOKEN}"\n'
        "batch_limit = 500\npoll_interval_s = 0.05\n"
    )
    agent_args = ("--speed", str(SPEED), "--start", START.isoformat(), "--duration",
                  str(SECONDS), "--seed", str(SEED), "--commit-interval", "0.2")  # fmt: skip
    spool, agent_log, pc_log = tmp_path / "spool.db", tmp_path / "agent.log", tmp_path / "pc.log"

    proxy = Proxy(proxy_port, agent_port)
    agent = start_agent(spool, agent_port, agent_log, *agent_args)
    pc = start_pc(config, pc_log)
    # Seeded moments within the simulated hour's ~24 s of real time.
    events = sorted(
        [(rng.uniform(2, 20), "agent") for _ in range(2)]
        + [(rng.uniform(2, 20), "pc") for _ in range(2)]
        + [(rng.uniform(4, 16), "outage")]
    )
    t0 = time.monotonic()
    log: list[str] = []
    try:
        for at, what in events:
            time.sleep(max(0.0, at - (time.monotonic() - t0)))  # scheduling, not synchronising
            seq = healthz(agent_port)["seq"] if agent.poll() is None else -1
            log.append(f"{time.monotonic() - t0:5.1f}s {what} (agent seq {seq})")
            if what == "agent":
                kill(agent)
                agent = start_agent(spool, agent_port, agent_log, *agent_args)
            elif what == "pc":
                kill(pc)
                pc = start_pc(config, pc_log)
            else:
                proxy.down()
                time.sleep(rng.uniform(2, 4))
                proxy.up()

        # Wait until the agent has the whole hour and the PC, having fetched it, has twice found
        # nothing new (its source is idle at the head); then stop the flow as a user would.
        # Anything still in flight is not lost: the snapshot lies before it, and a restart
        # fetches it again, as after any crash. The table is checked after each stop.
        deadline = time.monotonic() + 60
        while True:
            h = healthz(agent_port)
            if h["poller_finished"] and h["seq"] == SECONDS and h["fetched_after"] >= SECONDS:
                break
            assert pc.poll() is None, pc_log.read_text()[-3000:]
            assert time.monotonic() < deadline, (h, log)
            time.sleep(0.1)
        rounds = 0
        while True:
            rounds += 1
            idle_from = healthz(agent_port)["api"]["caught_up"]
            while healthz(agent_port)["api"]["caught_up"] < idle_from + 2:
                assert pc.poll() is None and time.monotonic() < deadline + 60 * rounds, (
                    pc_log.read_text()[-3000:]
                )
                time.sleep(0.1)
            pc.send_signal(signal.SIGINT)
            try:
                pc.wait(30)
            except subprocess.TimeoutExpired:
                kill(pc)
            with duckdb.connect(str(db), read_only=True) as con:
                n = con.execute("SELECT count(*) FROM readings").fetchone()
            log.append(f"stop round {rounds}: {n[0] if n else 0} readings in the table")
            if (n and n[0] == SECONDS) or rounds == 4:
                break
            pc = start_pc(config, pc_log)
    finally:
        kill(agent)
        kill(pc)
        proxy.down()

    with duckdb.connect(str(db), read_only=True) as con:
        cols = ", ".join(READING_COLUMNS)
        rows = con.execute(
            f"SELECT epoch_us(ts), seq, {cols} FROM readings WHERE home_id = 'home' ORDER BY ts"
        ).fetchall()
        dupes = con.execute(
            "SELECT count(*) - count(DISTINCT (home_id, ts)) FROM readings"
        ).fetchone()
        rejected = con.execute("SELECT count(*) FROM rejected").fetchone()
    ts_us, values = expected_hour()
    got = np.array(rows, dtype=np.float64) if rows else np.empty((0, 14))
    print("\n".join(log), f"\nfinal stop rounds: {rounds}")
    have = {int(r[1]) for r in rows}
    missing = [s for s in range(1, SECONDS + 1) if s not in have]
    assert len(rows) == SECONDS, (len(rows), _ranges(missing), log)
    assert dupes == (0,) and rejected == (0,)
    assert [int(r[0]) for r in rows] == ts_us.tolist()
    assert [int(r[1]) for r in rows] == list(range(1, SECONDS + 1))
    assert np.array_equal(got[:, 2:], values)
    assert to_epoch_us(START) == int(rows[0][0])
