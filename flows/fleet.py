"""Many homes on one Bytewax cluster: computation spreads over processes, storage does not have to.

Every stateful step is keyed by home, so Bytewax spreads homes over all workers of all
processes. The readings sources have one partition per home (a home is read by exactly one
worker, and recovery resumes each home's cursor). Table rows are routed by home to the sink
partition of the DuckDB file (*shard*) that stores it (`FixedPartitionedSink`: Bytewax sends
each partition's items to the one worker that lists it). Only the process that owns the files
lists the sink and label partitions, so the other processes never open a database: DuckDB lets
one process hold a file. Labels confirmed in that process's dashboard reach the learner of the
event's home wherever it runs, because the learner step is keyed by home too.

A Bytewax cluster does not survive the loss of one process (the others stop with a panic), so
`supervise` starts the processes of one machine, and when one dies it stops the rest and starts
them all again; each resumes from the last snapshot in the shared recovery folder and the
idempotent sink writes what is replayed once.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from flows.agent_source import SourceItem, _AgentPartition
from flows.database import open_database
from flows.dataflow import get_flow
from flows.sink import SinkItem, write_items
from flows.sources import LabelSource, StoppableSource, _FilePartition
from nilm.records import Label
from nilm.settings import HomeSettings, Settings, shard_of

__all__ = [
    "FleetAgentSource",
    "FleetReplaySource",
    "ShardedDuckDBSink",
    "ShardedLabelSource",
    "fleet_flow",
    "label_part",
    "open_shards",
    "shard_part",
    "supervise",
]

log = logging.getLogger(__name__)


def shard_part(shard: int) -> str:
    """The name of a shard's sink partition; the names sort in shard order."""
    return f"shard-{shard:04d}"


def label_part(shard: int, shards: int) -> str:
    """The name of a shard's label partition: `LabelSource`'s own when there is one shard, so
    a one-home flow's recovered label cursor carries over."""
    return "labels" if shards == 1 else f"labels-{shard:04d}"


class FleetAgentSource(FixedPartitionedSource[SourceItem, int]):
    """Readings of many homes, each from its own Pi agent: one partition per home.

    A partition is named like `AgentSource`'s (`agent-<home_id>`), so a home that moves from a
    one-home flow to a fleet resumes its cursor from the same recovery state.
    """

    def __init__(self, homes: Sequence[HomeSettings], *, until_seq: int | None = None) -> None:
        if not homes:
            raise ValueError("a fleet needs at least one home")
        self.homes = {f"agent-{h.home_id}": h for h in homes}
        self.until_seq = until_seq

    def list_parts(self) -> list[str]:
        return sorted(self.homes)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _AgentPartition:
        home = self.homes[for_part]
        return _AgentPartition(home.agent, home.home_id, resume_state or 0, self.until_seq)


class FleetReplaySource(FixedPartitionedSource[SourceItem, tuple[int, int]]):
    """Recorded readings of many homes: one partition per home, its files read in order."""

    def __init__(
        self,
        files_by_home: Mapping[str, Sequence[Path]],
        chunk_rows: int = 20_000,
        on_rows: Callable[[int], None] | None = None,
    ) -> None:
        self.files = {f"replay-{h}": (h, [Path(p) for p in ps]) for h, ps in files_by_home.items()}
        self.chunk_rows = chunk_rows
        self.on_rows = on_rows

    def list_parts(self) -> list[str]:
        return sorted(self.files)

    def build_part(
        self, step_id: str, for_part: str, resume_state: tuple[int, int] | None
    ) -> _FilePartition:
        home_id, paths = self.files[for_part]
        return _FilePartition(paths, home_id, self.chunk_rows, resume_state, self.on_rows)


class _ShardPartition(StatefulSinkPartition[SinkItem, None]):
    def __init__(
        self,
        cur: duckdb.DuckDBPyConnection,
        counts: Counter[str] | None,
        on_write: Callable[[], None] | None,
    ) -> None:
        self.cur = cur
        self.counts = counts
        self.on_write = on_write

    def write_batch(self, values: list[SinkItem]) -> None:
        write_items(self.cur, values)
        if self.on_write is not None:
            self.on_write()
        if self.counts is not None:
            for table, value in values:
                self.counts[table] += len(value) if table == "readings" else 1

    def snapshot(self) -> None:
        return None  # every write is idempotent: what is replayed after a restart lands once

    def close(self) -> None:
        self.cur.close()


class ShardedDuckDBSink(FixedPartitionedSink[SinkItem, None]):
    """Table rows keyed by home, each written to the DuckDB file that stores its home.

    `connections` holds the shards this process owns (shard index → connection); a process that
    owns none passes `{}` and writes nothing itself: its rows travel to the owner. `on_write`
    (by shard) is called after each write to that shard (the Home Assistant publisher's nudge).
    """

    def __init__(
        self,
        connections: Mapping[int, duckdb.DuckDBPyConnection],
        shards: int = 1,
        counts: Counter[str] | None = None,
        on_write: Mapping[int, Callable[[], None]] | None = None,
    ) -> None:
        bad = [k for k in connections if not 0 <= k < shards]
        if bad:
            raise ValueError(f"shards {bad} are outside 0..{shards - 1}")
        self.connections = dict(connections)
        self.shards = shards
        self.counts = counts
        self.on_write = dict(on_write or {})

    def list_parts(self) -> list[str]:
        return [shard_part(k) for k in sorted(self.connections)]

    def part_fn(self, item_key: str) -> int:
        return shard_of(item_key, self.shards)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _ShardPartition:
        shard = next(k for k in self.connections if shard_part(k) == for_part)
        cur = self.connections[shard].cursor()
        return _ShardPartition(cur, self.counts, self.on_write.get(shard))


class ShardedLabelSource(FixedPartitionedSource[tuple[str, Label], int]):
    """The confirmed labels of every shard this process owns, one partition per shard."""

    def __init__(
        self,
        connections: Mapping[int, duckdb.DuckDBPyConnection],
        shards: int = 1,
        poll_s: float = 1.0,
        finished: Callable[[], bool] | None = None,
    ) -> None:
        self.sources = {
            label_part(k, shards): LabelSource(con, poll_s, finished)
            for k, con in connections.items()
        }

    def list_parts(self) -> list[str]:
        return sorted(self.sources)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        return self.sources[for_part].build_part(step_id, for_part, resume_state)


def open_shards(settings: Settings) -> dict[int, duckdb.DuckDBPyConnection]:
    """Opens every shard's database file (this process becomes their one owner)."""
    opened: dict[int, duckdb.DuckDBPyConnection] = {}
    try:
        for k, path in enumerate(settings.shard_paths()):
            opened[k] = open_database(path)
    except BaseException:
        for con in opened.values():
            con.close()
        raise
    return opened


def fleet_flow(
    settings: Settings,
    connections: Mapping[int, duckdb.DuckDBPyConnection],
    stop: Callable[[], bool] | None = None,
    readings: FixedPartitionedSource[SourceItem, Any] | None = None,
    counts: Counter[str] | None = None,
    follow_labels: bool = True,
    on_write: Mapping[int, Callable[[], None]] | None = None,
) -> Dataflow:
    """Every configured home's agent readings and the owned shards' labels, into the shards.

    Every process of a cluster builds the same flow; only the owner of the files passes
    `connections`. `readings` replaces the agents (recorded files, a finite test run); without
    `follow_labels` the flow reads no labels and ends when the readings do.
    """
    source: Any = readings if readings is not None else FleetAgentSource(settings.home_list())
    labels: Any = None
    if follow_labels:
        labels = ShardedLabelSource(connections, settings.shards, settings.label_poll_s, stop)
    if stop is not None:
        source = StoppableSource(source, stop)
    sink = ShardedDuckDBSink(connections, settings.shards, counts, on_write)
    return get_flow(settings, source, sink, labels)


def local_addresses(processes: int) -> list[str]:
    """Free loopback addresses for the processes of a one-machine cluster."""
    socks = [socket.socket() for _ in range(processes)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [f"127.0.0.1:{s.getsockname()[1]}" for s in socks]
    finally:
        for s in socks:
            s.close()


def supervise(
    command: Callable[[int, list[str]], list[str]],
    processes: int,
    stop: Callable[[], bool],
    restart_delay_s: float = 2.0,
    env: Mapping[str, str] | None = None,
    on_start: Callable[[list[subprocess.Popen[bytes]]], None] | None = None,
) -> int:
    """Runs `processes` cluster processes on this machine until `stop()`, restarting them all
    when one dies (a Bytewax cluster does not outlive one of its processes).

    `command(process_id, addresses)` is each process's command line. Returns the exit code of
    the last round: 0 when every process ended cleanly after `stop()`.
    """
    rounds = 0
    while True:
        addresses = local_addresses(processes)
        procs = [
            subprocess.Popen(command(k, addresses), env=dict(env) if env is not None else None)
            for k in range(processes)
        ]
        rounds += 1
        log.info(
            "cluster of %d processes started (round %d): %s",
            processes, rounds, " ".join(str(p.pid) for p in procs),
        )  # fmt: skip
        if on_start is not None:
            on_start(procs)
        failed = None
        while failed is None and not stop():
            for p in procs:
                code = p.poll()
                if code is not None and code != 0:
                    failed = (p, code)
                    break
            if all(p.poll() == 0 for p in procs):
                return 0
            time.sleep(0.2)
        if failed is None:  # asked to stop: let every process drain and finish
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            codes = [p.wait() for p in procs]
            return max(codes, key=abs)
        proc, code = failed
        log.warning(
            "process %d exited with %d: stopping the cluster and starting it again from the "
            "last snapshot", proc.pid, code,
        )  # fmt: skip
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
        deadline = time.monotonic() + restart_delay_s
        while time.monotonic() < deadline and not stop():
            time.sleep(0.1)
        if stop():
            return code


def process_command(
    config: str | None, process_id: int, addresses: list[str], db_path: str | None = None
) -> list[str]:
    """`nilm run` for one process of a local cluster."""
    cmd = [sys.executable, "-m", "flows.cli", "run"]
    if config:
        cmd += ["--config", config]
    if db_path:
        cmd += ["--db", db_path]
    return [*cmd, "--process-id", str(process_id), "--addresses", ";".join(addresses)]
