"""The agent's HTTP API over real sockets, and the HTTP transport against the simulated Shelly."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nilm.parsing import parse_logger_rows
from nilm.records import READING_COLUMNS, to_epoch_us
from nilm.simulator import SimulatorConfig
from pi_agent.agent import Agent
from pi_agent.config import AgentConfig
from pi_agent.sim import SimShelly
from pi_agent.transports import HttpTransport, TransportError

START = "2026-01-05T06:00:00Z"
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def running(config: AgentConfig) -> AsyncIterator[Agent]:
    agent = Agent(config, TOKEN)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


async def until_seq(agent: Agent, seq: int) -> None:
    async def wait() -> None:
        while agent.spool.last_seq < seq:
            await agent.commits.wait(1.0)

    await asyncio.wait_for(wait(), 30)


async def until_finished(agent: Agent) -> None:
    while not agent.poller.finished:
        await asyncio.sleep(0.01)


def sim_config(tmp_path: Path, **kw: Any) -> AgentConfig:
    # Port 0: the server binds a free port itself (`agent.port` once it is running); a port
    # chosen here and bound later could be taken by another process in between.
    base: dict[str, Any] = dict(
        transport="sim", port=0, spool=str(tmp_path / "sim.db"), start=START,
        speed=400.0, duration_s=120.0, commit_interval_s=0.05, seed=2,
    )  # fmt: skip
    base.update(kw)
    return AgentConfig(**base)


def test_readings_api_pages_long_polls_and_guards_the_token(tmp_path: Path) -> None:
    config = sim_config(tmp_path)

    async def go() -> dict[str, Any]:
        async with running(config) as agent, aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{agent.port}"
            async with http.get(f"{url}/v1/readings") as r:
                assert r.status == 401
            async with http.get(f"{url}/v1/readings", headers={"Authorization": "Bearer x"}) as r:
                assert r.status == 401
            async with http.get(f"{url}/v1/readings?after=-1", headers=AUTH) as r:
                assert r.status == 400
            # Long poll from the very start: answered by the first commit, not by the timeout.
            async with http.get(f"{url}/v1/readings?after=0&wait=30", headers=AUTH) as r:
                first = await r.json()
            assert first["readings"] and first["readings"][0]["seq"] == 1
            await until_seq(agent, 120)
            rows: list[dict[str, Any]] = []
            after = 0
            while True:
                q = f"{url}/v1/readings?after={after}&limit=25"
                async with http.get(q, headers=AUTH) as r:
                    page = (await r.json())["readings"]
                if not page:
                    break
                assert len(page) <= 25
                rows += page
                after = page[-1]["seq"]
            # The poller notes that it has finished after its last reading is committed.
            await asyncio.wait_for(until_finished(agent), 30)
            async with http.get(f"{url}/healthz") as r:
                health = await r.json()
            return {"rows": rows, "health": health}

    out = asyncio.run(go())
    rows = out["rows"]
    assert [r["seq"] for r in rows] == list(range(1, 121))
    batch, rejections = parse_logger_rows(rows, "home", source="agent")
    assert rejections == [] and batch.seq.tolist() == list(range(1, 121))
    sim = SimShelly(SimulatorConfig(seed=2, start=datetime(2026, 1, 5, 6, tzinfo=UTC)))
    t0 = to_epoch_us(sim.config.start)
    assert batch.ts_us.tolist() == [t0 + k * 1_000_000 for k in range(120)]
    for k in (0, 57, 119):
        assert [batch.columns[c][k] for c in READING_COLUMNS] == list(sim.values_at(k))
    health = out["health"]
    assert health["seq"] == 120 and health["poller"]["readings"] == 120
    assert health["poller"]["missed"] == 0 and health["poller_finished"] is True
    assert health["fetched_after"] >= 119


def test_sim_agent_resumes_its_virtual_clock_after_the_spool(tmp_path: Path) -> None:
    config = sim_config(tmp_path, duration_s=60.0)

    async def go(c: AgentConfig) -> int:
        async with running(c) as agent:
            await until_seq(agent, 30)
            return agent.spool.last_seq

    asyncio.run(go(sim_config(tmp_path, duration_s=30.0)))  # the first run stops at 30 s
    assert asyncio.run(go(config)) >= 30

    async def rows() -> list[dict[str, Any]]:
        async with running(config) as agent:
            await until_seq(agent, 60)
            async with aiohttp.ClientSession() as http:
                url = f"http://127.0.0.1:{agent.port}/v1/readings?limit=1000"
                async with http.get(url, headers=AUTH) as r:
                    return list((await r.json())["readings"])

    got = asyncio.run(rows())
    stamps = [r["timestamp_utc"] for r in got]
    assert [r["seq"] for r in got] == list(range(1, 61))
    assert len(set(stamps)) == 60 and stamps == sorted(stamps)  # no second twice, none skipped
    assert stamps[-1] == "2026-01-05T06:00:59.000000Z"


def test_http_transport_polls_the_simulated_shelly_over_a_socket(tmp_path: Path) -> None:
    shelly = sim_config(tmp_path, duration_s=10.0, speed=1000.0)

    async def go() -> None:
        async with running(shelly) as sim_agent:
            poller = AgentConfig(
                transport="http", port=0, spool=str(tmp_path / "http.db"),
                shelly_url=f"http://127.0.0.1:{sim_agent.port}", interval_s=0.02,
                commit_interval_s=0.05,
            )  # fmt: skip
            await until_seq(sim_agent, 10)  # the simulated meter now rests at its last second
            assert sim_agent.sim is not None
            expected = sim_agent.sim.status_at(sim_agent.sim.now)
            transport = HttpTransport(poller.shelly_url)
            assert await transport.em_status(datetime.now(UTC)) == expected
            await transport.close()
            async with running(poller) as http_agent:
                await until_seq(http_agent, 5)
                rows = http_agent.spool.after(0, 5)
                requests = http_agent.health()["transport_stats"]["requests"]
            assert all(list(r[2:]) == [expected[c] for c in READING_COLUMNS] for r in rows)
            assert requests >= 5
        bad = HttpTransport(f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
        with pytest.raises(TransportError, match="failed"):
            await bad.em_status(datetime.now(UTC))
        await bad.close()

    asyncio.run(go())


def test_retention_in_simulation_follows_the_simulated_clock(tmp_path: Path) -> None:
    config = sim_config(tmp_path, start="2020-02-01T00:00:00Z", retention_days=1.0)
    agent = Agent(config, TOKEN)
    try:
        day_us = 86_400_000_000
        t0 = to_epoch_us(datetime(2020, 2, 1, tzinfo=UTC))
        assert agent.retention_now_us() == t0
        for k in range(3):
            agent.spool.append(t0 + k * day_us, [1.0] * len(READING_COLUMNS))
        agent.spool.flush()
        agent.spool.enforce_retention(agent.retention_now_us())
        assert agent.spool.first_seq() == 2  # only the reading 2 simulated days old went
    finally:
        agent.spool.close()


def test_backfill_makes_the_past_hour_exist_at_once_then_runs_live(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=1)
    config = sim_config(tmp_path, start=start.isoformat(), speed=1.0, duration_s=0.0,
                        backfill=True)  # fmt: skip

    async def go() -> tuple[int, Any]:
        async with running(config) as agent:
            await until_seq(agent, 3600)
            return agent.spool.last_seq, agent.spool.after(3599, 1)[0]

    last, row = asyncio.run(go())
    assert 3600 <= last < 3700  # an hour of history, then live at one reading a second
    assert row[1] == to_epoch_us(start) + 3599 * 1_000_000
