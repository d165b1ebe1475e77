"""The Pi agent as a Bytewax source: batched catch-up, then the live stream, resumable by seq.

One partition per home. A fetcher thread pulls `GET /v1/readings?after=SEQ&limit=N` pages from
the agent (long-polling with `wait=` once caught up) into a small bounded queue; `next_batch`
only drains that queue, so it never blocks the worker, and `next_awake` paces it while the queue
is empty. The snapshot is the last sequence number `next_batch` has handed to the flow, not the
last one fetched, so after a crash Bytewax resumes the partition just after what the recovered
epoch had seen; readings of the epoch that was lost come again, and the idempotent DuckDB sink
(keyed by `(home_id, ts)`) stores them once. Together: exactly once.

The PC being unreachable, the agent restarting or a wrong token never stops the flow: the
fetcher logs what is wrong and retries with capped, jittered backoff.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import random
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from nilm.parsing import parse_logger_rows
from nilm.records import ReadingChunk
from nilm.settings import AgentSettings

__all__ = ["AgentClient", "AgentSource"]

log = logging.getLogger(__name__)

SourceItem = tuple[str, ReadingChunk]
LONG_POLL_S = 10.0
MAX_BACKOFF_S = 10.0
QUEUE_PAGES = 4
# How often the flow looks for a fetched page: 20 looks a second cost little, and bound the wait.
WAKE_S = 0.05


class AgentError(Exception):
    """The agent could not be reached or answered with an error."""


class AgentClient:
    """A kept-alive HTTP connection to the agent's API.

    Parameters
    ----------
    url
        The agent's base URL, e.g. `http://raspberrypi.local:8765`.
    token
        The bearer token the agent was started with.
    """

    def __init__(self, url: str, token: str, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"agent url {url!r} must look like http://HOST:PORT")
        self.url = url
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = (
                http.client.HTTPSConnection
                if self.scheme == "https"
                else http.client.HTTPConnection
            )
            self._conn = cls(self.host, self.port, timeout=timeout_s)
        self._conn.timeout = timeout_s
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout_s)
        return self._conn

    def get(self, path: str, params: dict[str, Any], wait_s: float = 0.0) -> dict[str, Any]:
        conn = self._connection(self.timeout_s + wait_s)
        target = f"{self.prefix}{path}?{urlencode(params)}"
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        try:
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise AgentError(f"agent at {self.url} unreachable: {err!r}") from err
        if response.status == 401:
            raise AgentError(
                f"agent at {self.url} refused the token (HTTP 401): set agent.token to the "
                "token the agent was started with"
            )
        if response.status != 200:
            raise AgentError(f"agent at {self.url} answered HTTP {response.status}: {body[:200]!r}")
        try:
            data: dict[str, Any] = json.loads(body)
        except ValueError as err:
            raise AgentError(f"agent at {self.url} sent unreadable JSON: {err}") from err
        return data

    def readings(self, after: int, limit: int, wait_s: float = 0.0) -> dict[str, Any]:
        params: dict[str, Any] = {"after": after, "limit": limit}
        if wait_s > 0:
            params["wait"] = f"{wait_s:g}"
        return self.get("/v1/readings", params, wait_s)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Fetcher(threading.Thread):
    """Pulls pages after `cursor` into `pages`, forever, until `stop` is set."""

    def __init__(
        self, settings: AgentSettings, cursor: int, pages: queue.Queue[list[Any] | None]
    ) -> None:
        super().__init__(name="agent-fetcher", daemon=True)
        self.settings = settings
        self.cursor = cursor
        self.pages = pages
        self.stop = threading.Event()
        self.client = AgentClient(settings.url, settings.token)
        self.rng = random.Random()

    def run(self) -> None:
        backoff = 0.0
        caught_up = False
        last_error = ""
        while not self.stop.is_set():
            # Long polls end early on new readings; their length only sets how often an idle
            # source re-asks, so tie it to the poll interval (10 s at the default 1 s).
            long_poll = min(LONG_POLL_S, max(1.0, 10 * self.settings.poll_interval_s))
            wait = long_poll if caught_up else 0.0
            try:
                page = self.client.readings(self.cursor, self.settings.batch_limit, wait)
            except AgentError as err:
                backoff = min(max(2 * backoff, self.settings.poll_interval_s), MAX_BACKOFF_S)
                if str(err) != last_error:
                    log.warning("%s; retrying (every %.1f s at most)", err, MAX_BACKOFF_S)
                    last_error = str(err)
                self.stop.wait(backoff * self.rng.uniform(0.5, 1.0))
                continue
            if last_error:
                log.info("agent at %s reachable again", self.settings.url)
                last_error, backoff = "", 0.0
            rows = page.get("readings", [])
            head = page.get("last_seq")
            if head is not None and int(head) < self.cursor:
                log.error(
                    "the agent's newest reading is seq %d but this flow has read up to %d: the "
                    "agent's spool was replaced (a new SD card?); reading it again from the start "
                    "(readings are keyed by time, so none is stored twice)",
                    int(head), self.cursor,
                )  # fmt: skip
                self.cursor = 0
                self._put(None)
                continue
            first = page.get("first_seq")
            if rows and first is not None and int(rows[0]["seq"]) > self.cursor + 1:
                log.warning(
                    "readings %d..%d were deleted on the Pi (retention) before the PC fetched them",
                    self.cursor + 1, int(rows[0]["seq"]) - 1,
                )  # fmt: skip
            caught_up = len(rows) < self.settings.batch_limit
            if rows:
                self.cursor = int(rows[-1]["seq"])
                self._put(rows)
        self.client.close()

    def _put(self, page: list[Any] | None) -> None:
        while not self.stop.is_set():
            try:
                self.pages.put(page, timeout=0.5)
                return
            except queue.Full:
                continue


class _AgentPartition(StatefulSourcePartition[SourceItem, int]):
    def __init__(
        self, settings: AgentSettings, home_id: str, resume_seq: int, until_seq: int | None
    ) -> None:
        self.settings = settings
        self.home_id = home_id
        self.until_seq = until_seq
        self.last_seq = resume_seq
        # Pages of rows; None says the agent's numbering restarted (its spool was replaced).
        self.pages: queue.Queue[list[Any] | None] = queue.Queue(maxsize=QUEUE_PAGES)
        self.fetcher = _Fetcher(settings, resume_seq, self.pages)
        self.fetcher.start()
        log.info("agent source for %r resumes after seq %d", home_id, resume_seq)

    def next_batch(self) -> list[SourceItem]:
        if self.until_seq is not None and self.last_seq >= self.until_seq:
            raise StopIteration
        items: list[SourceItem] = []
        rows: list[dict[str, Any]] = []
        taken = 0
        while taken < 4 * self.settings.batch_limit:
            try:
                page = self.pages.get_nowait()
            except queue.Empty:
                break
            if page is None:  # the agent's numbering restarted: hand on what came before
                items += self._chunk(rows)
                rows, self.last_seq = [], 0
                continue
            fresh = [r for r in page if int(r.get("seq", -1)) > self.last_seq]
            if self.until_seq is not None:
                fresh = [r for r in fresh if int(r["seq"]) <= self.until_seq]
            if fresh:
                rows += fresh
                taken += len(fresh)
                self.last_seq = int(fresh[-1]["seq"])
        return items + self._chunk(rows)

    def _chunk(self, rows: list[dict[str, Any]]) -> list[SourceItem]:
        if not rows:
            return []
        batch, rejections = parse_logger_rows(rows, self.home_id, source="agent")
        return [(self.home_id, ReadingChunk("agent", batch, tuple(rejections)))]

    def next_awake(self) -> datetime | None:
        if not self.pages.empty():
            return None
        # The fetcher long-polls, so a page is here as soon as the agent has it; only this
        # wake-up decides how long it then waits for the flow (an event's delay, live).
        return datetime.now(UTC) + timedelta(seconds=min(self.settings.poll_interval_s, WAKE_S))

    def snapshot(self) -> int:
        return self.last_seq

    def close(self) -> None:
        self.fetcher.stop.set()


class AgentSource(FixedPartitionedSource[SourceItem, int]):
    """Readings of one home from its Pi agent, as `(home_id, ReadingChunk("agent", ...))`.

    Parameters
    ----------
    agent_settings
        Where the agent is (`url`), its `token`, the page size (`batch_limit`) and how often an
        idle source looks for new pages (`poll_interval_s`).
    home_id
        The home these readings belong to.
    until_seq
        Stop after handing on this sequence number (a finite run, for tests and catch-up jobs);
        None follows the live stream for ever.
    """

    def __init__(
        self, agent_settings: AgentSettings, home_id: str, *, until_seq: int | None = None
    ) -> None:
        AgentClient(agent_settings.url, agent_settings.token)  # fail early on a bad url
        if agent_settings.batch_limit < 1:
            raise ValueError(f"agent.batch_limit {agent_settings.batch_limit} must be at least 1")
        self.agent_settings = agent_settings
        self.home_id = home_id
        self.until_seq = until_seq

    def list_parts(self) -> list[str]:
        return [f"agent-{self.home_id}"]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _AgentPartition:
        return _AgentPartition(self.agent_settings, self.home_id, resume_state or 0, self.until_seq)
