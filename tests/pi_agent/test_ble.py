"""BLE RPC against a byte-exact fake of the Shelly's rpc-gatts server, at MTU 23 and 247."""

from __future__ import annotations

import asyncio
import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nilm.records import READING_COLUMNS
from nilm.simulator import SimulatorConfig
from pi_agent.agent import Agent
from pi_agent.ble import (
    DATA_UUID,
    RX_CTL_UUID,
    TX_CTL_UUID,
    BleTransport,
    RpcDisabledError,
    ShellyBleRpc,
)
from pi_agent.config import AgentConfig
from pi_agent.sim import SimShelly
from pi_agent.spool import Spool
from pi_agent.transports import TransportError
from tests.pi_agent.fake_gatt import LEN, FakeBleakClient, FakeWorld

START = datetime(2026, 1, 5, tzinfo=UTC)
AT = datetime(2026, 1, 5, 0, 10, tzinfo=UTC)
MTUS = [23, 247]


@pytest.fixture(scope="module")
def shelly() -> SimShelly:
    sim = SimShelly(SimulatorConfig(seed=4, start=START))
    sim.now = AT
    return sim


def world_for(shelly: SimShelly, mtu: int, **quirks: Any) -> FakeWorld:
    return FakeWorld(handler=shelly.rpc, mtu=mtu, **quirks)


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


async def connected(world: FakeWorld) -> FakeBleakClient:
    client = FakeBleakClient(world, "AA:BB:CC:DD:EE:FF", lambda c: None)
    await client.connect()
    return client


def transport(world: FakeWorld, clock: list[float] | None = None) -> BleTransport:
    clock = clock if clock is not None else [0.0]

    async def find() -> str:
        return "AA:BB:CC:DD:EE:FF"

    return BleTransport(
        address="AA:BB:CC:DD:EE:FF",
        client_factory=lambda device, cb: FakeBleakClient(world, device, cb),
        find_device=find,
        rng=random.Random(7),
        monotonic=lambda: clock[0],
        sleep=no_sleep,
        poll_s=0.0,
    )


async def connect_then_call(t: BleTransport) -> Any:
    await t.connect()
    return await t.em_status(AT)


def test_polls_never_wait_for_a_connection_to_be_set_up(shelly: SimShelly) -> None:
    world = world_for(shelly, 247)
    t = transport(world)

    async def go() -> None:
        with pytest.raises(TransportError, match="connecting"):
            await t.em_status(AT)  # returns at once; the connection is set up meanwhile
        assert t._connect_task is not None
        await t._connect_task
        assert await t.em_status(AT) == shelly.status_at(AT)
        await t.close()

    asyncio.run(go())
    assert world.connects == 1


@pytest.mark.parametrize("mtu", MTUS)
def test_one_call_follows_the_framing_byte_for_byte(shelly: SimShelly, mtu: int) -> None:
    world = world_for(shelly, mtu)

    async def go() -> dict[str, Any]:
        rpc = ShellyBleRpc(await connected(world), mtu, poll_s=0.0)
        return await rpc.call("EM.GetStatus", {"id": 0})

    result = asyncio.run(go())
    assert result == shelly.status_at(AT)

    writes = [(u, d) for kind, u, d in world.ops if kind == "write"]
    request = json.dumps(world.requests[0], separators=(",", ":")).encode()
    assert writes[0] == (TX_CTL_UUID, LEN.pack(len(request)))
    chunks = [d for u, d in writes[1:]]
    assert all(u == DATA_UUID for u, _ in writes[1:])
    assert b"".join(chunks) == request
    assert all(len(c) == mtu - 3 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= mtu - 3

    reads = [(u, d) for kind, u, d in world.ops if kind == "read"]
    assert reads[0][0] == RX_CTL_UUID
    length = LEN.unpack(reads[0][1])[0]
    data = [d for u, d in reads[1:]]
    assert all(len(d) == mtu - 2 for d in data[:-1])
    assert len(data) == math.ceil(length / (mtu - 2))
    assert json.loads(b"".join(data))["result"] == result
    assert len(data) >= 2  # a real EM.GetStatus frame (~500 bytes) spans reads at both MTUs


@pytest.mark.parametrize("mtu", MTUS)
def test_empty_first_reads_are_polled_through(shelly: SimShelly, mtu: int) -> None:
    world = world_for(shelly, mtu, rx_delay_reads=3, empty_data_reads=2)

    async def go() -> tuple[dict[str, Any], int]:
        rpc = ShellyBleRpc(await connected(world), mtu, poll_s=0.0)
        return await rpc.call("EM.GetStatus", {"id": 0}), rpc.stats.empty_reads

    result, empty = asyncio.run(go())
    assert result == shelly.status_at(AT)
    rx = [d for kind, u, d in world.ops if u == RX_CTL_UUID]
    assert [LEN.unpack(d)[0] for d in rx[:3]] == [0, 0, 0]
    assert empty == 3 + 2


@pytest.mark.parametrize("mtu", MTUS)
@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda n: b"\xde\xad\xbe\xef", id="garbage"),
        pytest.param(lambda n: LEN.pack(n + 100), id="too-long"),
        pytest.param(lambda n: LEN.pack(n - 40), id="too-short"),
    ],
)
def test_corrupt_rx_ctl_length_while_the_data_is_complete_json(
    shelly: SimShelly, mtu: int, corrupt: Any
) -> None:
    world = world_for(shelly, mtu, corrupt_length=corrupt)

    async def go() -> tuple[dict[str, Any], int]:
        rpc = ShellyBleRpc(await connected(world), mtu, poll_s=0.0)
        first = await rpc.call("EM.GetStatus", {"id": 0})
        second = await rpc.call("EM.GetStatus", {"id": 0})  # the channel is still in step
        assert second == first
        return first, rpc.stats.corrupt_lengths

    result, corrupt_count = asyncio.run(go())
    assert result == shelly.status_at(AT)
    assert corrupt_count >= 2


@pytest.mark.parametrize("mtu", MTUS)
def test_a_stale_frame_from_an_abandoned_call_is_dropped(shelly: SimShelly, mtu: int) -> None:
    old = json.dumps({"id": 1, "src": "x", "result": {"stale": True}}).encode()
    world = world_for(shelly, mtu, queued_on_connect=[old])

    async def go() -> tuple[dict[str, Any], int]:
        rpc = ShellyBleRpc(await connected(world), mtu, poll_s=0.0)
        return await rpc.call("EM.GetStatus", {"id": 0}), rpc.stats.stale_frames

    result, stale = asyncio.run(go())
    assert result == shelly.status_at(AT) and stale == 1


@pytest.mark.parametrize("mtu", MTUS)
def test_disconnect_mid_response_then_reconnect(shelly: SimShelly, mtu: int) -> None:
    world = world_for(shelly, mtu)
    t = transport(world)

    async def go() -> None:
        await t.connect()
        assert await t.em_status(AT) == shelly.status_at(AT)
        world.drop_after_data_reads = world.data_reads + 1  # dies in the 2nd of >= 2 reads
        with pytest.raises(TransportError, match="Not connected"):
            await t.em_status(AT)
        # The next poll starts reconnecting without waiting for it; once connected (a fresh
        # channel) a whole frame is read again.
        with pytest.raises(TransportError, match="connecting"):
            await t.em_status(AT)
        await t.connect()
        assert await t.em_status(AT) == shelly.status_at(AT)

    asyncio.run(go())
    assert world.connects == 2
    assert t.counters.disconnects == 1 and t.counters.failed_calls == 1
    assert t.counters.mtu == mtu


@pytest.mark.parametrize("mtu", MTUS)
def test_stale_bluez_service_cache_is_cleared_once(shelly: SimShelly, mtu: int) -> None:
    world = world_for(shelly, mtu, stale_cache=True)
    t = transport(world)
    result = asyncio.run(connect_then_call(t))
    assert result == shelly.status_at(AT)
    assert world.cache_clears == 1 and t.counters.cache_clears == 1 and t.hint == ""


def test_rpc_over_ble_disabled_gives_the_set_config_hint(shelly: SimShelly) -> None:
    world = world_for(shelly, 23, rpc_disabled=True)
    clock = [100.0]
    t = transport(world, clock)

    async def go() -> None:
        with pytest.raises(RpcDisabledError, match=r"BLE\.SetConfig"):
            await t.connect()
        with pytest.raises(TransportError, match="reconnect in"):  # backing off, no new scan
            await t.em_status(AT)

    asyncio.run(go())
    assert "BLE.SetConfig" in t.stats()["hint"]
    assert world.connects == 2  # connected, cleared the cache, connected again, gave up


def test_le_connection_abort_by_local_is_retried_at_once(shelly: SimShelly) -> None:
    world = world_for(shelly, 247, abort_connects=2)
    t = transport(world)
    assert asyncio.run(connect_then_call(t)) == shelly.status_at(AT)
    assert t.counters.abort_retries == 2 and t.counters.connect_failures == 0


def test_reconnect_backoff_doubles_with_jitter_up_to_the_cap(shelly: SimShelly) -> None:
    world = world_for(shelly, 23, fail_connects=10)
    clock = [0.0]
    t = transport(world, clock)
    t.backoff_max_s = 8.0
    delays = []

    async def go() -> None:
        for _ in range(6):
            with pytest.raises(TransportError):
                await t.connect()
            delay = t._next_attempt - clock[0]
            delays.append(delay)
            with pytest.raises(TransportError, match="reconnect in"):
                await t.em_status(AT)  # too early: no connection attempt
            clock[0] += delay

    asyncio.run(go())
    caps = [1, 2, 4, 8, 8, 8]
    assert all(c * 0.5 <= d <= c for d, c in zip(delays, caps, strict=True)), delays
    assert len({round(d / c, 6) for d, c in zip(delays, caps, strict=True)}) > 1  # jittered
    assert world.fail_connects == 4


def test_gatt_operations_never_overlap(shelly: SimShelly) -> None:
    world = world_for(shelly, 23, rx_delay_reads=1)
    t = transport(world)

    async def go() -> list[Any]:
        await t.connect()
        return list(await asyncio.gather(*(t.em_status(AT) for _ in range(5))))

    results = asyncio.run(go())
    assert results == [shelly.status_at(AT)] * 5
    assert world.max_in_flight == 1
    assert world.connects == 1  # one connection held for all calls


def test_agent_polls_through_a_dropped_link_and_keeps_its_beat(
    shelly: SimShelly, tmp_path: Path
) -> None:
    world = world_for(shelly, 23, rx_delay_reads=1, empty_data_reads=1)
    world.drop_after_data_reads = 100  # the link dies mid-response in about the 4th poll
    t = BleTransport(
        address="AA:BB:CC:DD:EE:FF",
        client_factory=lambda device, cb: FakeBleakClient(world, device, cb),
        find_device=lambda: asyncio.sleep(0, result="AA:BB:CC:DD:EE:FF"),
        poll_s=0.0,
    )
    config = AgentConfig(
        transport="ble", ble_address="AA:BB:CC:DD:EE:FF", port=0,
        spool=str(tmp_path / "ble.db"), interval_s=0.02, commit_interval_s=0.05,
    )  # fmt: skip
    agent = Agent(config, "token", transport=t)

    async def go() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(agent.run(ready))
        await ready.wait()
        while agent.spool.last_seq < 20:
            await agent.commits.wait(5.0)
        agent.stop()
        await task

    asyncio.run(go())
    again = Spool(tmp_path / "ble.db")
    rows = again.after(0, 100)
    again.close()
    expected = [shelly.status_at(AT)[c] for c in READING_COLUMNS]
    assert len(rows) >= 20 and all(list(r[2:]) == expected for r in rows)
    stats = agent.poller.stats
    assert world.connects == 2 and t.counters.disconnects == 1
    assert stats.missed >= 2 and stats.gaps >= 1  # the failed call and the reconnecting poll
    assert stats.readings == len(rows)


def padded_to_end_at(shelly: SimShelly, mtu: int, tail: int) -> Any:
    """A handler whose every frame ends `tail` bytes into its last `data` read."""
    per_read = mtu - 2

    def handler(request: dict[str, Any]) -> dict[str, Any]:
        response = {**shelly.rpc(request), "pad": ""}
        size = len(json.dumps(response, separators=(",", ":")))
        response["pad"] = "x" * ((tail - size) % per_read)
        return response

    return handler


@pytest.mark.parametrize(("mtu", "short_by"), [(23, 1), (247, 30)])
def test_short_rx_ctl_length_with_a_frame_queued_behind_loses_no_poll(
    shelly: SimShelly, mtu: int, short_by: int
) -> None:
    # The device queues a notification behind every answer, and rx_ctl under-reports every
    # frame's length. Each alignment of a frame's end against the reads is tried: where the read
    # that crosses the short length is also the frame's last, the next read brings the queued
    # frame's bytes, so the frame must be taken in that same read.
    notification = json.dumps(
        {"src": "shellypro3em-sim", "dst": "nilm-pi-agent", "method": "NotifyStatus",
         "params": {"ts": 1767571800.0, "em:0": {"id": 0, "a_act_power": 212.4}}},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    assert len(notification) > short_by
    polls = 3
    for tail in range(1, mtu - 1):
        world = world_for(
            shelly, mtu, corrupt_length=lambda n: LEN.pack(n - short_by),
            queued_after_response=notification,
        )  # fmt: skip
        world.handler = padded_to_end_at(shelly, mtu, tail)
        t = transport(world)

        async def go(t: BleTransport = t) -> list[Any]:
            await t.connect()
            return [await t.em_status(AT) for _ in range(polls)]

        results = asyncio.run(go())
        assert results == [shelly.status_at(AT)] * polls, tail
        assert world.connects == 1 and t.counters.failed_calls == 0, tail
        assert t.counters.stale_frames == polls - 1  # each queued notification was skipped
        assert t.counters.corrupt_lengths >= polls
