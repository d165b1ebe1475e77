"""AgentSource: pages from a real agent process, never blocks, resumes after its snapshot."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main

from flows.agent_source import AgentSource
from nilm.records import READING_COLUMNS, ReadingChunk, to_epoch_us
from nilm.settings import AgentSettings
from nilm.simulator import SimulatorConfig
from pi_agent.sim import SimShelly
from tests.pi_agent.procs import TOKEN, free_port, healthz, start_agent, start_agent_on_free_port

START = datetime(2026, 1, 5, 12, tzinfo=UTC)
N = 600


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("agent")
    proc, port = start_agent_on_free_port(
        tmp / "spool.db", tmp / "agent.log", "--speed", "2000", "--duration", str(N),
        "--start", START.isoformat(), "--commit-interval", "0.05", "--seed", "5",
    )  # fmt: skip
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


def settings(port: int, **kw: Any) -> AgentSettings:
    base: dict[str, Any] = dict(
        url=f"http://127.0.0.1:{port}", token=TOKEN, batch_limit=100, poll_interval_s=0.01
    )
    base.update(kw)
    return AgentSettings(**base)


def run_flow(source: AgentSource, recovery: Path | None = None) -> list[tuple[str, ReadingChunk]]:
    out: list[tuple[str, ReadingChunk]] = []
    flow = Dataflow("agent_source_test")
    op.output("out", op.input("in", flow, source), TestingSink(out))
    run_main(
        flow,
        epoch_interval=timedelta(milliseconds=50),
        recovery_config=RecoveryConfig(str(recovery)) if recovery else None,
    )
    return out


def seqs(items: list[tuple[str, ReadingChunk]]) -> list[int]:
    return [int(s) for _, chunk in items for s in chunk.batch.seq.tolist()]


def test_all_readings_arrive_in_order_with_their_values(agent: int) -> None:
    items = run_flow(AgentSource(settings(agent), "home", until_seq=N))
    assert {h for h, _ in items} == {"home"}
    assert all(c.source == "agent" and c.rejections == () for _, c in items)
    assert seqs(items) == list(range(1, N + 1))
    assert len(items) < N // 10  # batched retrieval: chunks of pages, not rows
    sim = SimShelly(SimulatorConfig(seed=5, start=START))
    t0 = to_epoch_us(START)
    ts = [int(t) for _, c in items for t in c.batch.ts_us.tolist()]
    assert ts == [t0 + k * 1_000_000 for k in range(N)]
    last = items[-1][1].batch
    assert [float(last.columns[c][-1]) for c in READING_COLUMNS] == list(sim.values_at(N - 1))


def test_a_restart_resumes_after_the_snapshot(agent: int, tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    first = run_flow(AgentSource(settings(agent), "home", until_seq=250), tmp_path)
    second = run_flow(AgentSource(settings(agent), "home", until_seq=N), tmp_path)
    assert seqs(first) == list(range(1, 251))
    assert seqs(second) == list(range(251, N + 1))


def test_next_batch_never_blocks_while_the_agent_is_unreachable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    source = AgentSource(settings(port, poll_interval_s=0.05), "home", until_seq=40)
    part = source.build_part("in", source.list_parts()[0], None)
    caplog.set_level(logging.WARNING, "flows.agent_source")
    try:
        for _ in range(20):
            assert part.next_batch() == []
            awake = part.next_awake()
            assert awake is not None and awake > datetime.now(UTC) - timedelta(seconds=1)
        # The agent comes up later: the same partition picks it up without any restart.
        proc = start_agent(
            tmp_path / "late.db", port, tmp_path / "late.log", "--speed", "1000",
            "--duration", "40", "--commit-interval", "0.05",
        )  # fmt: skip
        try:
            got: list[int] = []
            deadline = time.monotonic() + 30
            while len(got) < 40 and time.monotonic() < deadline:
                for _, chunk in part.next_batch():
                    got += chunk.batch.seq.tolist()
                time.sleep(0.01)
            assert got == list(range(1, 41))
            assert part.snapshot() == 40
            assert healthz(port)["fetched_after"] >= 39
        finally:
            proc.kill()
            proc.wait()
    finally:
        part.close()
    assert any("unreachable" in r.getMessage() for r in caplog.records)


def test_next_batch_returns_while_a_fetch_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.agent_source as mod

    entered, release = threading.Event(), threading.Event()

    def hang(self: Any, after: int, limit: int, wait_s: float = 0.0) -> dict[str, Any]:
        entered.set()
        release.wait()
        return {"readings": [], "last_seq": 0, "first_seq": None}

    monkeypatch.setattr(mod.AgentClient, "readings", hang)
    source = AgentSource(settings(free_port()), "home")
    part = source.build_part("in", source.list_parts()[0], 7)
    try:
        assert entered.wait(10)  # the fetcher is stuck inside a request...
        assert part.next_batch() == []  # ...and the worker is not
        assert part.snapshot() == 7 and part.next_awake() is not None
    finally:
        part.close()
        release.set()


def test_a_wrong_token_is_reported_not_fatal(agent: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "flows.agent_source")
    source = AgentSource(settings(agent, token="wrong"), "home")
    part = source.build_part("in", source.list_parts()[0], None)
    try:
        deadline = time.monotonic() + 10
        while not any("401" in r.getMessage() for r in caplog.records):
            assert part.next_batch() == []
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        part.close()
    assert any("agent.token" in r.getMessage() for r in caplog.records)


def test_a_bad_url_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="http://HOST:PORT"):
        AgentSource(AgentSettings(url="127.0.0.1:8765"), "home")


def test_a_replaced_spool_is_read_again_from_the_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    caplog.set_level(logging.ERROR, "flows.agent_source")
    source = AgentSource(settings(port), "home")
    # This flow had read up to seq 500 from an earlier spool; the Pi now has a fresh one.
    part = source.build_part("in", source.list_parts()[0], 500)
    proc = start_agent(
        tmp_path / "fresh.db", port, tmp_path / "fresh.log", "--speed", "1000",
        "--duration", "30", "--commit-interval", "0.05",
    )  # fmt: skip
    try:
        got: list[int] = []
        deadline = time.monotonic() + 30
        while len(got) < 30 and time.monotonic() < deadline:
            for _, chunk in part.next_batch():
                got += chunk.batch.seq.tolist()
            time.sleep(0.01)
    finally:
        part.close()
        proc.kill()
        proc.wait()
    assert got == list(range(1, 31)) and part.snapshot() == 30
    assert any("spool was replaced" in r.getMessage() for r in caplog.records)
