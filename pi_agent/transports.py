"""Ways to ask a Shelly Pro 3EM for `EM.GetStatus`, behind one small interface.

A `Transport` connects, answers `em_status(at)` with the `EM.GetStatus` result (a dict) or raises
`TransportError`, and closes. Three exist: `BleTransport` (in `pi_agent.ble`, the Pi's normal
way), `HttpTransport` (a Shelly on the network) and `SimTransport` (in `pi_agent.sim`), which
answers from the household simulator. The simulator is imported only when it is used, so an
agent on real hardware does not carry it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "EndOfSimulation",
    "HttpTransport",
    "Transport",
    "TransportError",
]

logger = logging.getLogger(__name__)


class TransportError(Exception):
    """The Shelly could not be asked, or did not answer sensibly; the next poll may succeed."""


class EndOfSimulation(Exception):
    """The simulated meter has reached the end of its `duration`; no more readings will come."""


class Transport(Protocol):
    """One object owns all contact with the meter."""

    name: str

    async def connect(self) -> None: ...

    async def em_status(self, at: datetime) -> Mapping[str, Any]:
        """`EM.GetStatus` of meter 0, asked at `at` (only the simulator uses it)."""
        ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class HttpTransport:
    """`GET {url}/rpc/EM.GetStatus?id=0` on one kept-alive connection.

    Parameters
    ----------
    url
        The Shelly's base URL, e.g. `http://192.168.1.50`.
    timeout_s
        Per request.
    """

    name = "http"

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._session: Any = None
        self._requests = 0
        self._errors = 0

    async def connect(self) -> None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                connector=aiohttp.TCPConnector(limit=1),
            )

    async def em_status(self, at: datetime) -> Mapping[str, Any]:
        import aiohttp

        await self.connect()
        self._requests += 1
        try:
            async with self._session.get(f"{self.url}/rpc/EM.GetStatus", params={"id": "0"}) as r:
                if r.status != 200:
                    text = (await r.text())[:200]
                    raise TransportError(f"{self.url} answered HTTP {r.status}: {text}")
                result = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as err:
            self._errors += 1
            raise TransportError(f"EM.GetStatus over HTTP at {self.url} failed: {err!r}") from err
        if not isinstance(result, dict):
            self._errors += 1
            raise TransportError(f"{self.url} returned {type(result).__name__}, not an object")
        return result

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def stats(self) -> dict[str, Any]:
        return {"requests": self._requests, "errors": self._errors}
