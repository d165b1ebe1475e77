"""Just enough HTTP/1.1 on asyncio streams: a keep-alive server and a keep-alive GET client.

Why not aiohttp: importing `aiohttp` costs ~24 MB of resident memory (it and its C-extension
dependencies), half of the agent's budget on a 512 MB Pi Zero 2W; the agent serves three GET
routes and polls one URL, which the standard library does in ~35 MB all told (measured by
`benchmarks/bench_agent.py`). The tests drive this server with aiohttp's client and this client
against aiohttp's server, so each side is checked by an independent implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qsl, urlsplit

__all__ = ["HttpClient", "HttpError", "HttpServer", "Request", "Response"]

logger = logging.getLogger(__name__)

MAX_LINE = 8192
MAX_HEADERS = 100
MAX_BODY = 1024 * 1024


class HttpError(Exception):
    """Answer the request with `status` and `text`."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes = b""


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = await reader.readuntil(b"\n")
        if line in (b"\r\n", b"\n"):
            return headers
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise ValueError(f"malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    raise ValueError(f"more than {MAX_HEADERS} headers")


class HttpServer:
    """Routes `(method, path)` to handlers; a path ending in `/*` matches its prefix.

    Parameters
    ----------
    routes
        `{("GET", "/healthz"): handler, ("GET", "/rpc/*"): handler, ...}`.
    """

    def __init__(self, routes: dict[tuple[str, str], Handler]) -> None:
        self.routes = routes
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._serve, host, port, reuse_address=True, limit=MAX_LINE
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _route(self, method: str, path: str) -> Handler:
        allowed = False
        for (m, pattern), handler in self.routes.items():
            hit = path == pattern or (pattern.endswith("/*") and path.startswith(pattern[:-1]))
            if hit and m == method:
                return handler
            allowed = allowed or hit
        if allowed:
            raise HttpError(405, f"{method} is not allowed on {path}")
        raise HttpError(404, f"no such path {path}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                try:
                    method, target, version = line.decode("latin-1").split()
                    headers = await _read_headers(reader)
                    length = int(headers.get("content-length", "0"))
                    if not 0 <= length <= MAX_BODY:
                        raise ValueError(f"content-length {length} out of range")
                except ValueError as err:
                    await self._write(writer, Response(400, str(err).encode(), "text/plain"), False)
                    return
                body = await reader.readexactly(length) if length else b""
                parts = urlsplit(target)
                request = Request(
                    method.upper(), parts.path, dict(parse_qsl(parts.query)), headers, body
                )
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                try:
                    response = await self._route(request.method, request.path)(request)
                except HttpError as err:
                    response = Response(err.status, err.text.encode(), "text/plain", err.headers)
                except Exception:
                    logger.exception("error answering %s %s", method, target)
                    response = Response(500, b"internal error, see the agent's log", "text/plain")
                await self._write(writer, response, keep)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except asyncio.CancelledError:
            return  # the server is stopping: end this connection quietly
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, r: Response, keep: bool) -> None:
        reason = HTTPStatus(r.status).phrase if r.status in HTTPStatus._value2member_map_ else ""
        head = [
            f"HTTP/1.1 {r.status} {reason}",
            f"Content-Type: {r.content_type}",
            f"Content-Length: {len(r.body)}",
            f"Connection: {'keep-alive' if keep else 'close'}",
            *(f"{k}: {v}" for k, v in r.headers.items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + r.body)
        await writer.drain()


class HttpClient:
    """GET over one kept-alive connection to `http://host:port` (no TLS: a LAN device).

    A kept-alive connection the peer has closed meanwhile is retried once on a new one.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body) of `GET target`; raises OSError or ValueError on failure."""
        reused = self._writer is not None
        try:
            return await self._get(target, headers or {})
        except (ConnectionError, asyncio.IncompleteReadError):
            await self.close()
            if not reused:
                raise
            try:  # GET is idempotent: one retry on a fresh connection
                return await self._get(target, headers or {})
            except BaseException:
                await self.close()
                raise
        except BaseException:
            await self.close()
            raise

    async def _get(self, target: str, headers: dict[str, str]) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        lines = [f"GET {target} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 "Connection: keep-alive", "Accept: application/json",
                 *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await self._writer.drain()
        status_line = await self._reader.readline()
        if not status_line:
            raise asyncio.IncompleteReadError(b"", None)
        parts = status_line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError(f"not an HTTP status line: {status_line[:80]!r}")
        status = int(parts[1])
        head = await _read_headers(self._reader)
        if head.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked(self._reader)
        elif "content-length" in head:
            body = await self._reader.readexactly(int(head["content-length"]))
        else:
            body = await self._reader.read(MAX_BODY)
            head["connection"] = "close"
        if head.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
            await self.close()
        return status, body

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                await _read_headers(reader)  # trailers, then the blank line
                return bytes(body)
            body += await reader.readexactly(size)
            await reader.readexactly(2)
            if len(body) > MAX_BODY:
                raise ValueError(f"response body over {MAX_BODY} bytes")

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
