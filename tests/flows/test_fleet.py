"""Many homes: settings that list them, rows routed to the shard that stores each home, and a
two-process cluster that loses a process mid-run and still stores everything exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from bytewax.testing import run_main

from flows.database import open_database
from flows.fleet import FleetAgentSource, FleetReplaySource, fleet_flow
from flows.recordings import write_simulation
from flows.sources import count_rows
from nilm.settings import AgentSettings, HomeSettings, Settings, load_settings, shard_of
from nilm.simulator import SimulatorConfig
from tests.pi_agent.procs import TOKEN, healthz, start_agent_on_free_port

# Every table the flow writes, with its key and the columns compared (wall-clock columns such as
# `received_at` and `detected_at` differ between runs by design and are left out).
TABLES = {
    "readings": ("home_id, epoch_us(ts)", "seq, a_act_power, b_act_power, a_aprt_power"),
    "events": ("event_id", "home_id, epoch_us(ts), legs, delta_p_w, device, cluster_id"),
    "activations": ("activation_id", "home_id, device, on_event_id, off_event_id, energy_wh"),
    "clusters": ("cluster_id", "home_id, n_events, typical_delta_p_w"),
    "alerts": ("alert_id", "home_id, device, metric"),
    "event_windows": ("event_id", "home_id, epoch_us(ts), samples"),
}


def table_rows(
    paths: list[Path], tables: tuple[str, ...] = tuple(TABLES)
) -> dict[str, Counter[tuple[object, ...]]]:
    """Every table's rows over all `paths`, counted, so a row stored twice shows."""
    out: dict[str, Counter[tuple[object, ...]]] = {t: Counter() for t in tables}
    for path in paths:
        with duckdb.connect(str(path), read_only=True) as con:
            for table in tables:
                key, cols = TABLES[table]
                rows = con.execute(f"SELECT {key}, {cols} FROM {table}").fetchall()
                out[table].update(tuple(round(v, 6) if isinstance(v, float) else v for v in r)
                                  for r in rows)  # fmt: skip
    return out


def test_homes_are_listed_in_the_settings_file(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(
        'db_path = "fleet.duckdb"\nshards = 2\nutc_offset_s = 3600\n'
        '[agent]\ntoken = "shared"\n'
        '[[homes]]\nhome_id = "north"\nagent = { url = "http://10.0.0.2:8765" }\n'
        '[[homes]]\nhome_id = "south"\nutc_offset_s = -18000\n'
        'batch_model_path = "south.xgb"\n[homes.agent]\nurl = "http://10.0.0.3:8765"\n'
    )
    settings = load_settings(config)
    north, south = settings.home_list()
    assert (north.home_id, north.agent.url, north.agent.token, north.utc_offset_s) == (
        "north",
        "http://10.0.0.2:8765",
        "shared",
        3600,
    )
    assert (south.agent.url, south.utc_offset_s) == ("http://10.0.0.3:8765", -18000)
    assert settings.model_path("south") == "south.xgb" and settings.model_path("north") == ""
    assert settings.shard_paths() == ("fleet-0.duckdb", "fleet-1.duckdb")
    assert settings.db_path_for("north") == settings.shard_paths()[shard_of("north", 2)]

    config.write_text('[[homes]]\nhome_id = "a"\n[[homes]]\nhome_id = "a"\n')
    with pytest.raises(ValueError, match="more than once"):
        load_settings(config)
    config.write_text('[[homes]]\nurl = "http://x"\n')
    with pytest.raises(ValueError, match="home_id"):
        load_settings(config)


def test_the_shard_of_a_home_does_not_follow_the_hash_seed() -> None:
    code = "from nilm.settings import shard_of; print([shard_of(f'h{i}', 7) for i in range(40)])"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outs) == 1
    assert len(set(eval(outs.pop()))) > 1  # and homes do spread over the shards


def _simulated_homes(tmp_path: Path, homes: list[str], hours: float) -> dict[str, list[Path]]:
    files = {}
    for i, home in enumerate(homes):
        path = tmp_path / f"{home}.parquet"
        write_simulation(
            SimulatorConfig(seed=40 + i, home_id=home), hours / 24, path, None, progress=False
        )
        files[home] = [path]
    return files


def replay_into_shards(settings: Settings, files: dict[str, list[Path]]) -> None:
    """Replays each home's files through one fleet flow into `settings`' shard files."""
    connections = {k: open_database(p) for k, p in enumerate(settings.shard_paths())}
    try:
        source = FleetReplaySource(files, chunk_rows=1800)
        run_main(fleet_flow(settings, connections, readings=source, follow_labels=False))
    finally:
        for con in connections.values():
            con.close()


def test_rows_of_each_home_land_once_in_the_shard_that_stores_it(tmp_path: Path) -> None:
    homes = ["h-a", "h-b", "h-c", "h-d"]
    files = _simulated_homes(tmp_path, homes, hours=3)
    settings = Settings(db_path=str(tmp_path / "fleet.duckdb"), shards=2)
    assert len({shard_of(h, 2) for h in homes}) == 2  # the homes do use both shards

    replay_into_shards(settings, files)

    singles = []
    for home in homes:  # each home alone, through the one-home replay, as the reference
        from flows.app import replay

        one = tmp_path / f"single-{home}.duckdb"
        replay(files[home], Settings(db_path=str(one), home_id=home), progress=False)
        singles.append(one)

    for k, path in enumerate(settings.shard_paths()):
        with duckdb.connect(path, read_only=True) as con:
            stored = {h for (h,) in con.execute("SELECT DISTINCT home_id FROM readings").fetchall()}
        assert stored == {h for h in homes if shard_of(h, 2) == k}
    fleet = table_rows([Path(p) for p in settings.shard_paths()])
    alone = table_rows(singles)
    for table in TABLES:
        assert fleet[table] == alone[table], table
    assert sum(fleet["readings"].values()) == sum(count_rows(f[0]) for f in files.values())
    assert sum(fleet["events"].values()) > 20


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _wait(condition, what: str, limit_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {limit_s:.0f} s: {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_two_process_cluster_survives_a_killed_process(tmp_path: Path) -> None:
    start = datetime(2026, 1, 5, 8, tzinfo=UTC)
    seconds, speed = 1800, 150.0
    homes = [f"home-{i}" for i in range(4)]
    assert len({shard_of(h, 2) for h in homes}) == 2  # both shards are written
    ports: dict[str, int] = {}
    agents = []
    try:
        for i, home in enumerate(homes):
            args = ["--speed", str(speed), "--start", start.isoformat(), "--duration",
                    str(seconds), "--seed", str(60 + i), "--home-id", home,
                    "--commit-interval", "0.2"]  # fmt: skip
            spool, log_path = tmp_path / f"{home}.spool", tmp_path / f"{home}.log"
            agent, ports[home] = start_agent_on_free_port(spool, log_path, *args)
            agents.append(agent)
        db = tmp_path / "fleet.duckdb"
        config = tmp_path / "fleet.toml"
        config.write_text(
            f'db_path = "{db}"\nrecovery_dir = "{tmp_path / "recovery"}"\nshards = 2\n'
            "dashboard_port = 0\nsnapshot_interval_s = 1.0\n"
            f'[agent]\ntoken = "{TOKEN}"\nbatch_limit = 500\npoll_interval_s = 0.05\n'
            + "".join(
                f'[[homes]]\nhome_id = "{h}"\nagent = {{ url = "http://127.0.0.1:{ports[h]}" }}\n'
                for h in homes
            )
        )
        log_path = tmp_path / "cluster.log"
        nilm = [sys.executable, "-m", "flows.cli", "run", "--config", str(config)]
        shards = [Path(p) for p in Settings(db_path=str(db), shards=2).shard_paths()]

        def start_cluster() -> subprocess.Popen[bytes]:
            with log_path.open("ab") as log:
                cmd = [*nilm, "--processes", "2"]
                return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

        def stored() -> int:
            return sum(sum(table_rows([p], ("readings",))["readings"].values()) for p in shards)

        sup = start_cluster()
        try:
            _wait(lambda: len(_children(sup.pid)) == 2, "two processes started", 120)
            first = _children(sup.pid)
            # Kill the process that does not own the files, once every home is being read.
            _wait(lambda: min(healthz(ports[h])["fetched_after"] for h in homes) > 0,
                  "every home read", 180)  # fmt: skip
            os.kill(first[1], signal.SIGKILL)
            _wait(lambda: len(set(_children(sup.pid)) - set(first)) == 2, "a new cluster", 120)

            # Then stop as a user would once the agents are read to the end; what the flow had
            # fetched but not yet taken comes again after a restart (its snapshot lies before
            # it), so stop and start until the tables hold every reading.
            def fetched_to_the_end() -> bool:
                health = [healthz(ports[h]) for h in homes]
                return all(x["poller_finished"] and x["fetched_after"] >= seconds for x in health)

            def idle_since(marks: dict[str, int]) -> bool:
                return all(healthz(ports[h])["api"]["caught_up"] >= marks[h] + 2 for h in homes)

            for _round in range(4):
                _wait(fetched_to_the_end, "every home's readings fetched", 240)
                marks = {h: healthz(ports[h])["api"]["caught_up"] for h in homes}
                _wait(lambda m=marks: idle_since(m), "sources idle at the head", 120)
                sup.send_signal(signal.SIGINT)
                assert sup.wait(120) == 0, log_path.read_text()[-3000:]
                if stored() == len(homes) * seconds:
                    break
                sup = start_cluster()
        finally:
            if sup.poll() is None:
                for pid in _children(sup.pid):
                    os.kill(pid, signal.SIGKILL)
                sup.kill()
                sup.wait()
        shards = [Path(p) for p in Settings(db_path=str(db), shards=2).shard_paths()]
        cluster = table_rows(shards)

        # The same agents' readings through one process, from the start, as the reference.
        reference = Settings(
            db_path=str(tmp_path / "one.duckdb"),
            agent=AgentSettings(token=TOKEN, batch_limit=500, poll_interval_s=0.05),
        )
        one_homes = tuple(
            HomeSettings(h, AgentSettings(f"http://127.0.0.1:{ports[h]}", TOKEN, 500, 0.05))
            for h in homes
        )
        con = open_database(reference.db_path)
        try:
            source = FleetAgentSource(one_homes, until_seq=seconds)
            run_main(fleet_flow(reference, {0: con}, readings=source, follow_labels=False))
        finally:
            con.close()
        single = table_rows([Path(reference.db_path)])
    finally:
        for a in agents:
            a.kill()
            a.wait()

    assert sum(cluster["readings"].values()) == len(homes) * seconds
    assert max(cluster["readings"].values()) == 1
    for table in TABLES:
        missing = single[table] - cluster[table]
        extra = cluster[table] - single[table]
        assert not missing and not extra, (table, list(missing)[:3], list(extra)[:3])
