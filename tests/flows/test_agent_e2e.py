"""End to end on real processes: sim agent → loopback → `nilm run` → DuckDB, through SIGKILLs.

Three simulated hours at high speed. At seeded random moments the agent and `nilm run` are each
killed with SIGKILL and restarted, and the link between them goes dark for a few seconds (a
loopback proxy refuses connections and cuts the open ones). Afterwards the `readings` table must
equal the simulator's hours exactly: every second once, with its exact values and its seq; and
every other table must equal what an uncrashed `nilm run` wrote from the same readings (a copy of
the finished spool, served by an agent of its own, read while the crashed run finishes): not one
row missing, extra or different.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from nilm.records import READING_COLUMNS, to_epoch_us
from nilm.simulator import HouseholdSimulator, SimulatorConfig
from tests.pi_agent.procs import TOKEN, healthz, start_agent, start_agent_on_free_port

START = datetime(2026, 1, 5, 8, tzinfo=UTC)
# Three simulated hours from the simulated midnight: the fridge and heating cycles of the night.
SECONDS = 3 * 3600
SPEED = 450.0
LIMIT_S = 300.0  # the most any one wait below may take
SEED = 11


class Proxy:
    """A TCP relay from `port` (0: a free one) to `target` that can be taken down and brought
    back."""

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
        self.port = s.getsockname()[1]  # port 0 the first time: the one bound, from then on
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


# What each compared table is keyed by.
TABLE_KEYS = {
    "readings": ("home_id", "ts"),
    "events": ("event_id",),
    "activations": ("activation_id",),
    "clusters": ("cluster_id",),
    "labels": ("label_id",),
    "event_windows": ("event_id",),
    "alerts": ("alert_id",),
}
# Columns that may differ between a crashed run and an uncrashed one: the wall-clock times at
# which a row was written (an event's `detected_at`, a rejection's `received_at`, a label's
# `created_at`). Everything else is computed from the readings and must match exactly.
WALL_CLOCK = {"detected_at", "received_at", "created_at"}


def keyed_rows(db: Path) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """Every compared table's rows by key, without the wall-clock columns."""
    out: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    with duckdb.connect(str(db), read_only=True) as con:
        for table, key in TABLE_KEYS.items():
            cursor = con.execute(f"SELECT * FROM {table}")
            names = [d[0] for d in cursor.description]
            rows = [
                {n: v for n, v in zip(names, r, strict=True) if n not in WALL_CLOCK}
                for r in cursor.fetchall()
            ]
            out[table] = {tuple(r[k] for k in key): r for r in rows}
            assert len(out[table]) == len(rows), f"{table}: a key repeats"
    return out


def differences(got: dict[tuple[Any, ...], Any], want: dict[tuple[Any, ...], Any]) -> list[str]:
    missing = sorted(set(want) - set(got), key=repr)
    extra = sorted(set(got) - set(want), key=repr)
    changed = sorted((k for k in set(got) & set(want) if got[k] != want[k]), key=repr)
    return (
        [f"missing {want[k]}" for k in missing]
        + [f"extra {got[k]}" for k in extra]
        + [f"{k}: {_changed(got[k], want[k])}" for k in changed]
    )


def _changed(got: dict[str, Any], want: dict[str, Any]) -> str:
    return ", ".join(f"{c} {want[c]!r} -> {got[c]!r}" for c in want if got[c] != want[c])


def stop_when_idle(pc: subprocess.Popen[bytes], log: Path, port: int, timeout_s: float) -> None:
    """Ctrl-C the `nilm run` that reads from the port `port` (its own, unshared) once it has
    fetched every reading and then found nothing new twice."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            h = healthz(port)
            if h["poller_finished"] and h["seq"] == SECONDS and h["fetched_after"] >= SECONDS:
                break
            assert pc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        idle_from = healthz(port)["api"]["caught_up"]
        while healthz(port)["api"]["caught_up"] < idle_from + 2:
            assert pc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        pc.send_signal(signal.SIGINT)
        pc.wait(60)
        assert pc.returncode == 0, log.read_text()[-3000:]
    finally:
        kill(pc)


def _ranges(values: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in values:
        if out and out[-1][1] == v - 1:
            out[-1] = (out[-1][0], v)
        else:
            out.append((v, v))
    return out


@pytest.mark.slow
@pytest.mark.timeout(1800)  # above the sum of its own limits (LIMIT_S per wait)
def test_every_row_lands_once_through_kills_and_an_outage(tmp_path: Path) -> None:
    rng = random.Random(2026)
    agent_args = ("--speed", str(SPEED), "--start", START.isoformat(), "--duration",
                  str(SECONDS), "--seed", str(SEED), "--commit-interval", "0.2")  # fmt: skip
    spool, agent_log, pc_log = tmp_path / "spool.db", tmp_path / "agent.log", tmp_path / "pc.log"
    db, reference_db = tmp_path / "nilm.duckdb", tmp_path / "reference.duckdb"
    config, reference_config = tmp_path / "pc.toml", tmp_path / "reference.toml"

    def write_config(path: Path, database: Path, recovery: Path, port: int) -> None:
        path.write_text(
            f'home_id = "home"\ndb_path = "{database}"\nrecovery_dir = "{recovery}"\n'
            # the dashboard picks its own free port as it binds it
            "dashboard_port = 0\n"
            f'[agent]\nurl = "http://127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'
            "batch_limit = 500\npoll_interval_s = 0.05\n"
        )

    # The agent and the proxy bind free ports themselves; restarts bind the same ones again.
    agent, agent_port = start_agent_on_free_port(spool, agent_log, *agent_args)
    proxy = Proxy(0, agent_port)
    write_config(config, db, tmp_path / "recovery", proxy.port)
    pc = start_pc(config, pc_log)
    reference_agent = reference_pc = None
    # Seeded moments within the simulated hours' ~25 s of real time.
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

        # Wait until the agent has every reading and the PC, having fetched it, has twice found
        # nothing new (its source is idle at the head); then stop the flow as a user would.
        # Anything still in flight is not lost: the snapshot lies before it, and a restart
        # fetches it again, as after any crash. The table is checked after each stop.
        # Limits are for a loaded 2-core machine, where starting `nilm run` alone can take a
        # minute; on an idle one each wait ends in seconds.
        deadline = time.monotonic() + LIMIT_S
        while not ((h := healthz(agent_port))["poller_finished"] and h["seq"] == SECONDS):
            assert agent.poll() is None, agent_log.read_text()[-3000:]
            assert time.monotonic() < deadline, (h, log)
            time.sleep(0.1)
        # The reference: the same readings, read by a `nilm run` that nothing interrupts, at
        # the same time as the crashed run finishes. It reads a copy of the finished spool
        # from an agent of its own, so that the agent's counters by which each run is seen
        # idle count that run alone.
        reference_spool = tmp_path / "reference-spool.db"
        with (
            contextlib.closing(sqlite3.connect(spool)) as source,
            contextlib.closing(sqlite3.connect(reference_spool)) as target,
        ):
            source.backup(target)  # consistent while the agent has the file open
        reference_agent, reference_port = start_agent_on_free_port(
            reference_spool, tmp_path / "reference-agent.log", *agent_args
        )
        recovery = tmp_path / "reference-recovery"
        write_config(reference_config, reference_db, recovery, reference_port)
        reference_log = tmp_path / "reference.log"
        reference_pc = start_pc(reference_config, reference_log)
        while True:
            h = healthz(agent_port)
            if h["fetched_after"] >= SECONDS:
                break
            assert pc.poll() is None, pc_log.read_text()[-3000:]
            assert time.monotonic() < deadline, (h, log)
            time.sleep(0.1)
        rounds = 0
        while True:
            rounds += 1
            idle_from = healthz(agent_port)["api"]["caught_up"]
            while healthz(agent_port)["api"]["caught_up"] < idle_from + 2:
                assert pc.poll() is None and time.monotonic() < deadline + LIMIT_S * rounds, (
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
        stop_when_idle(reference_pc, reference_log, reference_port, LIMIT_S)
    finally:
        for proc in (agent, pc, reference_agent, reference_pc):
            if proc is not None:
                kill(proc)
        proxy.down()

    with duckdb.connect(str(db), read_only=True) as con:
        cols = ", ".join(READING_COLUMNS)
        rows = con.execute(
            f"SELECT epoch_us(ts), seq, {cols} FROM readings WHERE home_id = 'home' ORDER BY ts"
        ).fetchall()
        rejected = con.execute("SELECT count(*) FROM rejected").fetchone()
    ts_us, values = expected_hour()
    got = np.array(rows, dtype=np.float64) if rows else np.empty((0, 14))
    print("\n".join(log), f"\nfinal stop rounds: {rounds}")
    have = {int(r[1]) for r in rows}
    missing = [s for s in range(1, SECONDS + 1) if s not in have]
    assert len(rows) == SECONDS, (len(rows), _ranges(missing), log)
    assert rejected == (0,)
    assert [int(r[0]) for r in rows] == ts_us.tolist()
    assert [int(r[1]) for r in rows] == list(range(1, SECONDS + 1))
    assert np.array_equal(got[:, 2:], values)
    assert to_epoch_us(START) == int(rows[0][0])

    # Every table against the uncrashed run. This run stores no label (labels across restarts
    # are tested in tests/flows/test_labels.py); the table is compared all the same.
    got, want = keyed_rows(db), keyed_rows(reference_db)
    assert len(want["events"]) >= 5 and want["activations"] and want["event_windows"]
    problems = {t: d for t in TABLE_KEYS if (d := differences(got[t], want[t]))}
    assert not problems, {t: (len(d), d[:5]) for t, d in problems.items()}
