"""Shelly RPC over Bluetooth LE: one held connection, serialised GATT operations, every quirk.

The Shelly (Mongoose OS `rpc-gatts`) exposes service `5f6d4f53-5f52-5043-5f53-56435f49445f`
with three characteristics. A call is: write the request length as 4 bytes big-endian to
`tx_ctl`, write the request to `data` in chunks that fit one ATT write (MTU − 3 bytes), read
the response length from `rx_ctl` (0 while no response is ready), then read `data` until the
frame is complete. The server hands out MTU − 2 bytes per read on purpose, one byte short of a
full ATT read, so that no stack starts a "long read": the client reassembles.

Why not `aioshelly.rpc_device.blerpc` (its `BleRPC`, as of aioshelly 13.x): it is a sound client
for Home Assistant, and it does read `data` in a loop and poll `rx_ctl` while it reads 0. What
it does not fit is a Pi Zero 2W that must keep a 1 Hz beat for months:
- It trusts `rx_ctl`'s length: a short length cuts the frame there and the call fails on bad
  JSON; a frame left from an abandoned call or a notification queued ahead of the answer fails
  the call with an id mismatch instead of being skipped. Each such failure is a lost reading.
  This client checks JSON completeness and skips frames of other ids (the quirks below).
- A dropped link is the caller's to rebuild, and its connect (bleak-retry-connector's
  `establish_connection`) blocks while it retries. This transport rebuilds the link in the
  background so the poller keeps its beat, backs off with jitter, and retries
  `le-connection-abort-by-local` (the Pi's radio is shared with WiFi) at once.
- Installing it brings `aiohttp`, `bleak-retry-connector`, `habluetooth`, `bluetooth-data-tools`,
  `orjson`, `yarl` and `zeroconf` onto a 512 MB Pi whose agent otherwise needs bleak alone.
The protocol is small enough to own, and owning it lets the tests run it against a byte-exact
fake of the device's `rpc-gatts` server (`tests/pi_agent/fake_gatt.py`).

Quirks handled (each has a test in `tests/pi_agent/test_ble.py`):
- `rx_ctl` reads 0 (or nothing) for a while after the request: poll it.
- `data` reads come back empty before the frame is ready: poll again, a bounded number of times.
- `rx_ctl` holds a corrupt length while the bytes read so far parse as one complete JSON frame
  with our id: take the frame; trust JSON completeness over the length. A length that is too
  short is checked against the whole buffer in the very read that crosses it, because the next
  read may already bring the bytes of a frame queued behind.
- A response to an earlier, abandoned call is still queued: its id does not match; drop it and
  read the next frame.
- BlueZ's stale service cache (the Shelly's firmware changed its GATT table): the RPC
  characteristics are missing after connecting; clear the cache, rediscover, connect again.
- `le-connection-abort-by-local` (the Pi's radio is shared with WiFi): retry the connection a
  few times at once before backing off.
- A disconnect in the middle of a transfer: the call fails, the connection is dropped and
  rebuilt at the next poll, with exponential backoff and jitter if rebuilding fails.
- RPC over BLE switched off on the Shelly: the service never appears; say how to switch it on
  (`BLE.SetConfig`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from pi_agent.transports import TransportError

__all__ = [
    "DATA_UUID",
    "RPC_SERVICE_UUID",
    "RX_CTL_UUID",
    "SET_CONFIG_HINT",
    "TX_CTL_UUID",
    "BleProtocolError",
    "BleTransport",
    "RpcDisabledError",
    "ShellyBleRpc",
]

logger = logging.getLogger(__name__)

RPC_SERVICE_UUID = "5f6d4f53-5f52-5043-5f53-56435f49445f"
DATA_UUID = "5f6d4f53-5f52-5043-5f64-6174615f5f5f"
TX_CTL_UUID = "5f6d4f53-5f52-5043-5f74-785f63746c5f"
RX_CTL_UUID = "5f6d4f53-5f52-5043-5f72-785f63746c5f"
RPC_CHARACTERISTICS = (DATA_UUID, TX_CTL_UUID, RX_CTL_UUID)

MIN_MTU = 23
MAX_MTU = 517
MAX_FRAME = 64 * 1024  # a length above this in rx_ctl is corrupt
MAX_EMPTY_DATA_READS = 50
ABORT_RETRIES = 3
SET_CONFIG_HINT = (
    "RPC over Bluetooth looks switched off on the Shelly (its RPC service is missing even after "
    "clearing BlueZ's cache). Switch it on once over WiFi: curl -X POST -d "
    '\'{"id":1,"method":"BLE.SetConfig",'
    '"params":{"config":{"enable":true,"rpc":{"enable":true}}}}\' '
    "http://SHELLY-IP/rpc  (or in the Shelly web UI: Settings > Bluetooth > Enable RPC), then "
    "reboot the Shelly."
)

_PACK_LEN = struct.Struct(">I")


class BleProtocolError(TransportError):
    """The Shelly's answer did not follow the GATT RPC framing."""


class RpcDisabledError(TransportError):
    """The Shelly does not offer RPC over BLE."""


class RpcCallError(TransportError):
    """The Shelly answered the call with a JSON-RPC error."""


class GattClient(Protocol):
    """The part of `bleak.BleakClient` used here (tests pass a fake with the same shape)."""

    @property
    def is_connected(self) -> bool: ...

    @property
    def services(self) -> Any: ...

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def read_gatt_char(self, char_specifier: str) -> bytearray: ...

    async def write_gatt_char(
        self, char_specifier: str, data: bytes, response: bool = True
    ) -> None: ...


@dataclass(slots=True)
class BleStats:
    calls: int = 0
    failed_calls: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    abort_retries: int = 0
    cache_clears: int = 0
    empty_reads: int = 0
    corrupt_lengths: int = 0
    stale_frames: int = 0
    bytes_written: int = 0
    bytes_read: int = 0
    mtu: int = 0
    last_error: str = ""


def _frame(buf: bytes | bytearray) -> dict[str, Any] | None:
    """The JSON object in `buf` if it is one complete object, else None."""
    text = bytes(buf).strip()
    if not text.endswith(b"}"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class ShellyBleRpc:
    """JSON-RPC calls over one open GATT connection, one at a time.

    Parameters
    ----------
    client
        A connected `BleakClient` (or anything with its shape).
    mtu
        The negotiated ATT MTU: writes carry MTU − 3 bytes.
    poll_s
        Pause between polls of `rx_ctl` or of an empty `data` read.
    """

    def __init__(
        self,
        client: GattClient,
        mtu: int,
        poll_s: float = 0.02,
        stats: BleStats | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.mtu = max(MIN_MTU, min(int(mtu), MAX_MTU))
        self.poll_s = poll_s
        self.stats = stats if stats is not None else BleStats()
        self.sleep = sleep
        self._lock = asyncio.Lock()
        self._next_id = random.randrange(1, 1 << 20)

    async def call(
        self, method: str, params: Mapping[str, Any] | None = None, timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """The `result` of `method`; raises `TransportError` subclasses or `TimeoutError`.

        Errors of the link itself (bleak's) propagate unchanged so the owner can reconnect.
        """
        async with self._lock:  # one frame in flight: a tx_ctl write resets the device's buffer
            self._next_id += 1
            call_id = self._next_id
            request: dict[str, Any] = {"id": call_id, "src": "nilm-pi-agent", "method": method}
            if params is not None:
                request["params"] = dict(params)
            self.stats.calls += 1
            response = await asyncio.wait_for(self._exchange(request), timeout_s)
        if "error" in response:
            err = response["error"]
            raise RpcCallError(f"{method} failed on the Shelly: {err}")
        if "result" not in response:
            raise BleProtocolError(f"{method}: response has neither result nor error: {response}")
        result: dict[str, Any] = response["result"]
        return result

    async def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(request, separators=(",", ":")).encode()
        await self.client.write_gatt_char(TX_CTL_UUID, _PACK_LEN.pack(len(payload)), response=True)
        step = self.mtu - 3
        for i in range(0, len(payload), step):
            await self.client.write_gatt_char(DATA_UUID, payload[i : i + step], response=True)
        self.stats.bytes_written += len(payload)
        while True:
            frame = await self._receive()
            if frame.get("id") == request["id"]:
                return frame
            self.stats.stale_frames += 1
            logger.debug("dropped a frame for call %r while waiting for %r", frame.get("id"),
                         request["id"])  # fmt: skip

    async def _receive(self) -> dict[str, Any]:
        length = 0
        while length == 0:
            raw = await self.client.read_gatt_char(RX_CTL_UUID)
            if len(raw) >= 4:
                length = _PACK_LEN.unpack(bytes(raw[:4]))[0]
            if length == 0:
                self.stats.empty_reads += 1
                await self.sleep(self.poll_s)
        expected: int | None = length
        if length > MAX_FRAME:
            self.stats.corrupt_lengths += 1
            logger.debug("rx_ctl length %d is corrupt; reading until the JSON is complete", length)
            expected = None
        buf = bytearray()
        empty = 0
        while True:
            chunk = await self.client.read_gatt_char(DATA_UUID)
            if not chunk:
                frame = _frame(buf) if buf else None
                if frame is not None:  # the length said more, but the frame is whole
                    self.stats.corrupt_lengths += 1
                    return frame
                empty += 1
                self.stats.empty_reads += 1
                if empty > MAX_EMPTY_DATA_READS:
                    raise BleProtocolError(
                        f"data stayed empty after {len(buf)} of {length} bytes "
                        f"({bytes(buf[:60])!r}...)"
                    )
                await self.sleep(self.poll_s)
                continue
            buf += chunk
            self.stats.bytes_read += len(chunk)
            if expected is not None and len(buf) >= expected:
                frame = _frame(buf[:expected])
                if frame is not None:
                    return frame
                # The length lied (too short). The chunk that crossed it may have completed the
                # frame, so check the whole buffer now, in this same read: the next read would
                # append whatever frame is queued behind this one and the buffer never parse.
                self.stats.corrupt_lengths += 1
                expected = None
            if expected is None or chunk.endswith(b"}"):
                frame = _frame(buf)
                if frame is not None:
                    if expected is not None:
                        self.stats.corrupt_lengths += 1  # complete before the promised length
                    return frame
            if len(buf) > MAX_FRAME:
                raise BleProtocolError(f"frame exceeds {MAX_FRAME} bytes without completing")


ClientFactory = Callable[[Any, Callable[[Any], None]], GattClient]
DeviceFinder = Callable[[], Awaitable[Any]]


class BleTransport:
    """`EM.GetStatus` over one persistent BLE connection, rebuilt with backoff when it drops.

    Parameters
    ----------
    address, name
        The Shelly's Bluetooth address, or its advertised name (e.g. `ShellyPro3EM-…`).
    adapter
        The BlueZ adapter (`hci0`); None for the default.
    client_factory
        `factory(device, disconnected_callback) -> client`; `bleak.BleakClient` by default.
    find_device
        `await find_device()` -> the device to connect to (a scan by default).
    backoff_base_s, backoff_max_s
        Reconnect delays double from the base up to the cap, each jittered to 50–100 %.
    """

    name = "ble"

    def __init__(
        self,
        address: str | None = None,
        name: str | None = None,
        adapter: str | None = None,
        connect_timeout_s: float = 20.0,
        call_timeout_s: float = 5.0,
        *,
        client_factory: ClientFactory | None = None,
        find_device: DeviceFinder | None = None,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        abort_retry_s: float = 0.25,
        poll_s: float = 0.02,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if not address and not name:
            raise ValueError("BleTransport needs the Shelly's address or name")
        self.address = address
        self.device_name = name
        self.adapter = adapter
        self.connect_timeout_s = connect_timeout_s
        self.call_timeout_s = call_timeout_s
        self.client_factory = client_factory or self._bleak_client
        self.find_device = find_device or self._scan
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.abort_retry_s = abort_retry_s
        self.poll_s = poll_s
        self.rng = rng or random.Random()
        self.monotonic = monotonic
        self.sleep = sleep
        self.counters = BleStats()
        self._client: GattClient | None = None
        self._rpc: ShellyBleRpc | None = None
        self._device: Any = None
        self._failures = 0
        self._next_attempt = 0.0
        self._lock = asyncio.Lock()
        self._connect_task: asyncio.Task[None] | None = None
        self._last_exc: Exception | None = None
        self.hint = ""

    # -- the Transport interface -------------------------------------------------------------

    async def connect(self) -> None:
        """Connect now (or wait for the connection under way); raises if that fails."""
        if self._connected():
            return
        task = self._start_connect()
        if task is None:
            raise self._backing_off()
        await asyncio.shield(task)
        if not self._connected():
            err = self._last_exc
            if isinstance(err, TransportError):
                raise err
            raise TransportError(f"BLE connect failed: {err!r}") from err

    async def em_status(self, at: datetime) -> Mapping[str, Any]:
        """One call on the held connection. Without one, this starts connecting in the background
        and fails at once: a scan and connect take seconds, and the poller must keep its beat."""
        from bleak.exc import BleakError

        if not self._connected():
            if self._rpc is not None:
                await self._drop("link lost")
            if self._start_connect() is None:
                raise self._backing_off()
            raise TransportError("BLE connecting to the Shelly")
        async with self._lock:
            rpc = self._rpc
            if rpc is None:
                raise TransportError("BLE link lost")
            try:
                return await rpc.call("EM.GetStatus", {"id": 0}, self.call_timeout_s)
            except RpcCallError:
                self.counters.failed_calls += 1
                raise
            except (BleakError, OSError, EOFError, BleProtocolError, TimeoutError) as err:
                self.counters.failed_calls += 1
                self.counters.last_error = repr(err)
                # Whatever state the link or the device's frame buffers are in, start clean.
                await self._drop(f"call failed: {err!r}")
                raise TransportError(f"EM.GetStatus over BLE failed: {err!r}") from err

    async def close(self) -> None:
        task = self._connect_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with self._lock:
            await self._drop("closing")

    def stats(self) -> dict[str, Any]:
        out = asdict(self.counters)
        out["connected"] = self._rpc is not None
        out["hint"] = self.hint
        return out

    # -- connection --------------------------------------------------------------------------

    def _connected(self) -> bool:
        return self._rpc is not None and self._client is not None and self._client.is_connected

    def _backing_off(self) -> TransportError:
        left = max(self._next_attempt - self.monotonic(), 0.0)
        return TransportError(
            f"BLE reconnect in {left:.1f} s "
            f"(after {self._failures} failed attempts: {self.counters.last_error})"
        )

    def _start_connect(self) -> asyncio.Task[None] | None:
        """The connection task under way or just started; None while backing off."""
        if self._connect_task is not None and not self._connect_task.done():
            return self._connect_task
        if self.monotonic() < self._next_attempt:
            return None
        self._connect_task = asyncio.create_task(self._connect_guarded())
        return self._connect_task

    async def _connect_guarded(self) -> None:
        try:
            rpc = await self._connect()
        except Exception as err:
            self._failures += 1
            self.counters.connect_failures += 1
            self.counters.last_error = repr(err)
            self._last_exc = err
            delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (self._failures - 1))
            delay *= self.rng.uniform(0.5, 1.0)
            self._next_attempt = self.monotonic() + delay
            logger.warning("BLE connect failed (%r); next attempt in %.1f s", err, delay)
            return
        async with self._lock:
            self._rpc = rpc
        self._failures = 0
        self._next_attempt = 0.0

    async def _connect(self) -> ShellyBleRpc:
        if self._device is None:
            self._device = await self.find_device()
        client = await self._open()
        if not self._has_rpc(client):
            # A stale GATT table in BlueZ's cache, or RPC over BLE is off: clear and look again.
            self.counters.cache_clears += 1
            logger.info("RPC characteristics missing; clearing the service cache and retrying")
            await self._clear_cache(client)
            self._device = await self.find_device()
            client = await self._open()
            if not self._has_rpc(client):
                await self._disconnect(client)
                self.hint = SET_CONFIG_HINT
                logger.error(SET_CONFIG_HINT)
                raise RpcDisabledError(SET_CONFIG_HINT)
        self.hint = ""
        mtu = self._mtu(client)
        self.counters.mtu = mtu
        self.counters.connects += 1
        self._client = client
        logger.info("connected to the Shelly over BLE (MTU %d)", mtu)
        return ShellyBleRpc(client, mtu, poll_s=self.poll_s, stats=self.counters, sleep=self.sleep)

    async def _open(self) -> GattClient:
        from bleak.exc import BleakError

        for attempt in range(ABORT_RETRIES + 1):
            client = self.client_factory(self._device, self._on_disconnect)
            try:
                await asyncio.wait_for(client.connect(), self.connect_timeout_s)
                return client
            except BleakError as err:
                if "le-connection-abort-by-local" in str(err) and attempt < ABORT_RETRIES:
                    self.counters.abort_retries += 1
                    logger.debug("le-connection-abort-by-local; retrying at once")
                    await self.sleep(self.abort_retry_s * self.rng.uniform(1.0, 2.0))
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _has_rpc(client: GattClient) -> bool:
        try:
            services = client.services
        except Exception:
            return False
        return all(services.get_characteristic(u) is not None for u in RPC_CHARACTERISTICS)

    @staticmethod
    def _mtu(client: GattClient) -> int:
        char = client.services.get_characteristic(DATA_UUID)
        size = getattr(char, "max_write_without_response_size", 0) or 0
        mtu = size + 3 if size > 20 else int(getattr(client, "mtu_size", MIN_MTU) or MIN_MTU)
        return max(MIN_MTU, min(mtu, MAX_MTU))

    async def _clear_cache(self, client: GattClient) -> None:
        """Forget the cached GATT table: BlueZ re-reads it on the next connection."""
        await self._disconnect(client)
        clear = getattr(client, "clear_cache", None)  # bleak-retry-connector's client has one
        if clear is None:
            clear = getattr(client, "unpair", None)  # BlueZ RemoveDevice drops the cache too
        if clear is not None:
            try:
                await clear()
            except Exception as err:  # nothing to remove is fine
                logger.debug("clearing the BLE cache: %r", err)
        self._device = None

    def _on_disconnect(self, client: Any) -> None:
        self.counters.disconnects += 1
        logger.info("the Shelly's BLE link dropped")

    async def _drop(self, why: str) -> None:
        client, self._client, self._rpc = self._client, None, None
        if client is not None:
            logger.debug("dropping the BLE connection: %s", why)
            await self._disconnect(client)

    @staticmethod
    async def _disconnect(client: GattClient) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), 5.0)
        except Exception as err:
            logger.debug("disconnect: %r", err)

    # -- bleak defaults ----------------------------------------------------------------------

    def _bleak_client(self, device: Any, on_disconnect: Callable[[Any], None]) -> GattClient:
        from bleak import BleakClient

        kwargs: dict[str, Any] = {"timeout": self.connect_timeout_s}
        if self.adapter:
            kwargs["bluez"] = {"adapter": self.adapter}
        client: GattClient = BleakClient(device, on_disconnect, **kwargs)
        return client

    async def _scan(self) -> Any:
        from bleak import BleakScanner

        kwargs: dict[str, Any] = {"timeout": self.connect_timeout_s}
        if self.adapter:
            kwargs["bluez"] = {"adapter": self.adapter}
        if self.address:
            device = await BleakScanner.find_device_by_address(self.address, **kwargs)
        else:
            wanted = self.device_name
            device = await BleakScanner.find_device_by_filter(
                lambda d, adv: (d.name or adv.local_name or "") == wanted, **kwargs
            )
        if device is None:
            raise TransportError(
                f"Shelly {self.address or self.device_name} not found in a "
                f"{self.connect_timeout_s:.0f} s scan: is it powered, within range, and is "
                "Bluetooth on (`bluetoothctl show`)?"
            )
        return device
