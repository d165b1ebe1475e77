"""A fake Shelly GATT peer that behaves like Mongoose OS `rpc-gatts` byte for byte.

`FakeShellyPeer` follows `mgos_rpc_channel_gatts.c`: a write to `tx_ctl` (4 bytes, big
endian) sets the expected frame length and drops any half-written frame; writes to `data`
append and must not overshoot (ATT "invalid offset"); a complete frame is answered. A read of
`rx_ctl` rewinds the read offset and returns the pending response's length (0 if none); each read
of `data` yields MTU − 2 bytes at most; when the frame is read out the next queued one moves up.
A new connection is a new channel with empty buffers.

`FakeWorld` holds what outlives one connection (the quirks), and `FakeBleakClient` is the
`BleakClient`-shaped object the transport talks to, failing the way bleak does.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bleak.exc import BleakDBusError, BleakError, BleakGATTProtocolError

from pi_agent.ble import DATA_UUID, RPC_SERVICE_UUID, RX_CTL_UUID, TX_CTL_UUID

LEN = struct.Struct(">I")
INVALID_OFFSET = 0x07
INVALID_ATTRIBUTE_VALUE_LENGTH = 0x0D
REQUEST_NOT_SUPPORTED = 0x06
INSUFFICIENT_RESOURCES = 0x11


class FakeShellyPeer:
    """The device side of one BLE connection."""

    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        self.mtu = world.mtu
        self.expected_flen = 0
        self.receiving = bytearray()
        self.sending = b""
        self.send_offset = 0
        self.outbox: list[bytes] = list(world.queued_on_connect)
        self.delayed: list[list[Any]] = []  # [reads left, frame]
        self.data_reads_of_frame = 0
        self.empty_left = 0
        self._promote()

    def _promote(self) -> None:
        if not self.sending and self.outbox:
            self.sending = self.outbox.pop(0)
            self.send_offset = 0
            self.data_reads_of_frame = 0
            self.empty_left = self.world.empty_data_reads

    def write(self, uuid: str, data: bytes) -> None:
        if uuid == TX_CTL_UUID:
            if len(data) < 4:
                raise BleakGATTProtocolError(REQUEST_NOT_SUPPORTED)
            flen = LEN.unpack(data[:4])[0]
            if flen > self.world.max_frame_size:
                raise BleakGATTProtocolError(INSUFFICIENT_RESOURCES)
            self.receiving = bytearray()
            self.expected_flen = flen
        elif uuid == DATA_UUID:
            if len(data) > self.mtu - 3:  # one ATT Write Request carries MTU - 3 bytes
                raise BleakGATTProtocolError(INVALID_ATTRIBUTE_VALUE_LENGTH)
            if len(self.receiving) + len(data) > self.expected_flen:
                raise BleakGATTProtocolError(INVALID_OFFSET)
            self.receiving += data
            if len(self.receiving) == self.expected_flen:
                request = json.loads(bytes(self.receiving))
                self.receiving = bytearray()
                self.expected_flen = 0
                self.world.requests.append(request)
                response = json.dumps(self.world.handler(request), separators=(",", ":"))
                if self.world.rx_delay_reads:
                    self.delayed.append([self.world.rx_delay_reads, response.encode()])
                else:
                    self.outbox.append(response.encode())
                    self._promote()
                if self.world.queued_after_response is not None:
                    self.outbox.append(self.world.queued_after_response)
                    self._promote()
        else:
            raise BleakGATTProtocolError(REQUEST_NOT_SUPPORTED)

    def _tick(self) -> None:
        """One rx_ctl read passes: a delayed response becomes ready after its count of reads."""
        self.outbox.extend(frame for left, frame in self.delayed if left == 0)
        self.delayed = [[left - 1, frame] for left, frame in self.delayed if left > 0]
        self._promote()

    def read(self, uuid: str) -> bytes:
        if uuid == RX_CTL_UUID:
            self._tick()
            self.send_offset = 0
            true = LEN.pack(len(self.sending))
            if self.sending and self.world.corrupt_length is not None:
                return self.world.corrupt_length(len(self.sending))
            return true
        if uuid == DATA_UUID:
            if self.sending and self.empty_left > 0:
                self.empty_left -= 1
                return b""
            n = min(len(self.sending) - self.send_offset, self.mtu - 2)
            chunk = self.sending[self.send_offset : self.send_offset + n]
            self.send_offset += n
            self.data_reads_of_frame += 1
            if self.sending and self.send_offset == len(self.sending):
                self.sending = b""
                self.send_offset = 0
                self._promote()
            return chunk
        raise BleakGATTProtocolError(REQUEST_NOT_SUPPORTED)


@dataclass
class FakeWorld:
    """The Shelly and the Pi's Bluetooth stack, across connections."""

    handler: Callable[[dict[str, Any]], dict[str, Any]]
    mtu: int = 23
    max_frame_size: int = 4096
    rx_delay_reads: int = 0
    empty_data_reads: int = 0
    corrupt_length: Callable[[int], bytes] | None = None
    queued_on_connect: list[bytes] = field(default_factory=list)
    queued_after_response: bytes | None = None  # a frame the device sends after each answer
    abort_connects: int = 0  # le-connection-abort-by-local this many times
    fail_connects: int = 0  # plain connection failures this many times
    stale_cache: bool = False  # RPC characteristics missing until the cache is cleared
    rpc_disabled: bool = False
    drop_after_data_reads: int | None = None  # the link drops mid-response, once
    requests: list[dict[str, Any]] = field(default_factory=list)
    ops: list[tuple[str, str, bytes]] = field(default_factory=list)
    connects: int = 0
    cache_clears: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    data_reads: int = 0


@dataclass
class FakeChar:
    uuid: str
    max_write_without_response_size: int


class FakeServices:
    def __init__(self, chars: dict[str, FakeChar]) -> None:
        self.chars = chars

    def get_characteristic(self, uuid: str) -> FakeChar | None:
        return self.chars.get(uuid)

    def get_service(self, uuid: str) -> object | None:
        return object() if uuid == RPC_SERVICE_UUID and self.chars else None


class FakeBleakClient:
    """What `bleak.BleakClient(device, disconnected_callback)` looks like to the transport."""

    def __init__(self, world: FakeWorld, device: Any, on_disconnect: Callable[[Any], None]) -> None:
        self.world = world
        self.device = device
        self.on_disconnect = on_disconnect
        self.peer: FakeShellyPeer | None = None
        self._connected = False
        self.mtu_size = world.mtu

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def services(self) -> FakeServices:
        if not self._connected:
            raise BleakError("Service Discovery has not been performed yet")
        if self.world.rpc_disabled or self.world.stale_cache:
            return FakeServices({})
        size = self.world.mtu - 3
        return FakeServices({u: FakeChar(u, size) for u in (DATA_UUID, TX_CTL_UUID, RX_CTL_UUID)})

    async def connect(self) -> None:
        await asyncio.sleep(0)
        if self.world.abort_connects > 0:
            self.world.abort_connects -= 1
            raise BleakDBusError("org.bluez.Error.Failed", ["le-connection-abort-by-local"])
        if self.world.fail_connects > 0:
            self.world.fail_connects -= 1
            raise BleakError("Device with address AA:BB was not found")
        self.world.connects += 1
        self.peer = FakeShellyPeer(self.world)
        self._connected = True

    async def disconnect(self) -> None:
        self._connected = False
        self.peer = None

    async def clear_cache(self) -> None:
        self.world.cache_clears += 1
        self.world.stale_cache = False

    def _drop(self) -> None:
        self._connected = False
        self.peer = None
        self.on_disconnect(self)

    async def _op(self, kind: str, uuid: str, fn: Callable[[FakeShellyPeer], bytes]) -> bytes:
        w = self.world
        w.in_flight += 1
        w.max_in_flight = max(w.max_in_flight, w.in_flight)
        try:
            await asyncio.sleep(0)  # a GATT op takes a connection event: others could interleave
            if not self._connected or self.peer is None:
                raise BleakError("Not connected")
            out = fn(self.peer)
            w.ops.append((kind, uuid, out))
            return out
        finally:
            w.in_flight -= 1

    async def read_gatt_char(self, char_specifier: str, **kwargs: Any) -> bytearray:
        if char_specifier == DATA_UUID:
            w = self.world
            if w.drop_after_data_reads is not None and w.data_reads >= w.drop_after_data_reads:
                w.drop_after_data_reads = None
                self._drop()
                raise BleakError("Not connected")
            w.data_reads += 1
        return bytearray(await self._op("read", char_specifier, lambda p: p.read(char_specifier)))

    async def write_gatt_char(
        self, char_specifier: str, data: bytes, response: bool = True
    ) -> None:
        def write(peer: FakeShellyPeer) -> bytes:
            peer.write(char_specifier, bytes(data))
            return bytes(data)

        await self._op("write", char_specifier, write)
