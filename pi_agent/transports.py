"""Ways to ask a Shelly Pro 3EM for `EM.GetStatus`, behind one small interface.

A `Transport` connects, answers `em_status(at)` with the `EM.GetStatus` result (a dict) or raises
`TransportError`, and closes. Three exist: `BleTransport` (in `pi_agent.ble`, the Pi's normal
way), `HttpTransport` (a Shelly on the network) and `SimTransport` (in `pi_agent.sim`), which
answers from the household simulator. The simulator is imported only when it is used, so an
agent on real hardware does not carry it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from pi_agent.httpd import HttpClient

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
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"shelly url {url!r} must look like http://HOST[:PORT]")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._client = HttpClient(parts.hostname, parts.port or 80)
        self._requests = 0
        self._errors = 0

    async def connect(self) -> None:
        return None

    async def em_status(self, at: datetime) -> Mapping[str, Any]:
        self._requests += 1
        try:
            status, body = await asyncio.wait_for(
                self._client.get("/rpc/EM.GetStatus?id=0"), self.timeout_s
            )
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as err:
            self._errors += 1
            raise TransportError(f"EM.GetStatus over HTTP at {self.url} failed: {err!r}") from err
        if status != 200:
            self._errors += 1
            raise TransportError(f"{self.url} answered HTTP {status}: {body[:200]!r}")
        try:
            result = json.loads(body)
        except ValueError as err:
            self._errors += 1
            raise TransportError(f"{self.url} sent unreadable JSON: {err}") from err
        if not isinstance(result, dict):
            self._errors += 1
            raise TransportError(f"{self.url} returned {type(result).__name__}, not an object")
        return result

    async def close(self) -> None:
        await self._client.close()

    def stats(self) -> dict[str, Any]:
        return {"requests": self._requests, "errors": self._errors}
