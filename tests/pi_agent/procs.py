"""Start `python -m pi_agent` as a real process and wait until it answers."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

TOKEN = "e2e-token"
SERVING = re.compile(r"agent serving on http://[^ ]+:([0-9]+) ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthz(port: int, timeout_s: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout_s) as r:
        data: dict[str, Any] = json.loads(r.read())
        return data


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Retry /healthz until it answers; fail at once if the process died."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode} before serving")
        try:
            healthz(port, 1.0)
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def start_agent(spool: Path, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A sim agent on `port` with `spool`; `extra` adds options (speed, start, duration...)."""
    cmd = [sys.executable, "-m", "pi_agent", "--transport", "sim", "--port", str(port),
           "--spool", str(spool), "--token", TOKEN, *extra]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    wait_healthy(port, proc)
    return proc


def start_agent_on_free_port(
    spool: Path, log: Path, *extra: str, timeout_s: float = 60.0
) -> tuple[subprocess.Popen[bytes], int]:
    """A sim agent that binds a free port itself (`--port 0`), and that port, read from its log.

    A port picked here, closed and bound later by the agent could be taken in between. A
    restart then binds the same port again (`start_agent`), as a Pi's agent does.
    """
    offset = log.stat().st_size if log.exists() else 0
    cmd = [sys.executable, "-m", "pi_agent", "--transport", "sim", "--port", "0",
           "--spool", str(spool), "--token", TOKEN, *extra]  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while (found := SERVING.search(log.read_bytes()[offset:].decode(errors="replace"))) is None:
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited with {proc.returncode} before serving")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"the agent did not say its port within {timeout_s:.0f} s")
        time.sleep(0.05)
    port = int(found[1])
    wait_healthy(port, proc, timeout_s)
    return proc, port
