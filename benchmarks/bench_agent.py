"""The Pi agent's memory (RSS) and CPU at 1 Hz, against the goal of < 60 MB and < 5 % of a core.

Runs the agent as it runs on the Pi — polling a meter once a second, committing the spool every
2 s, serving a PC that long-polls for new readings — for `--seconds` (10 minutes by default),
and samples the process's RSS and CPU time from /proc. With no Shelly here, the meter is a second
agent process in `sim` mode, reached over HTTP (`--transport http`, the default: the HTTP
transport's work per poll is the nearest stand-in for BLE's), or the measured agent simulates the
meter itself (`--transport sim`, which adds the simulator's day of numpy arrays).

    python benchmarks/bench_agent.py [--seconds 600] [--transport http|sim]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

RSS_GOAL_MB = 60.0
CPU_GOAL_PCT = 5.0
TOKEN = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 5.0, token: str | None = None) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_up(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"agent on port {port} exited with {proc.returncode}")
        try:
            get(f"http://127.0.0.1:{port}/healthz", 1.0)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def agent(port: int, spool: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "pi_agent", "--port", str(port), "--spool", str(spool),
           "--token", TOKEN, "--log-level", "WARNING", *args]  # fmt: skip
    proc = subprocess.Popen(cmd)
    wait_up(port, proc)
    return proc


def peak_rss_mb(pid: int) -> float:
    """The process's peak RSS (VmHWM) in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def proc_sample(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds used so far) of process `pid`."""
    rss_kb = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
    return rss_kb / 1024, cpu_s


def pc_reader(port: int, stop: threading.Event, got: list[int]) -> None:
    """What `nilm run` does: long-poll for whatever is new."""
    after = 0
    while not stop.is_set():
        try:
            page = get(f"http://127.0.0.1:{port}/v1/readings?after={after}&limit=5000&wait=5",
                       timeout=10, token=TOKEN)  # fmt: skip
        except OSError:
            time.sleep(0.5)
            continue
        if page["readings"]:
            after = page["readings"][-1]["seq"]
            got[0] = after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--transport", choices=("http", "sim"), default="http")
    parser.add_argument("--quick", action="store_true", help="measure for 30 s, not 10 minutes")
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 30.0)

    with tempfile.TemporaryDirectory() as tmp:
        procs: list[subprocess.Popen] = []
        try:
            port = free_port()
            if args.transport == "http":
                meter_port = free_port()
                procs.append(agent(meter_port, Path(tmp) / "meter.db", "--transport", "sim"))
                measured = agent(port, Path(tmp) / "spool.db", "--transport", "http",
                                 "--shelly-url", f"http://127.0.0.1:{meter_port}")  # fmt: skip
            else:
                measured = agent(port, Path(tmp) / "spool.db", "--transport", "sim")
            procs.append(measured)
            stop, got = threading.Event(), [0]
            reader = threading.Thread(target=pc_reader, args=(port, stop, got), daemon=True)
            reader.start()

            rss: list[float] = []
            _, cpu0 = proc_sample(measured.pid)
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.seconds:
                time.sleep(1.0)
                rss.append(proc_sample(measured.pid)[0])
            elapsed = time.monotonic() - t0
            _, cpu1 = proc_sample(measured.pid)
            peak = peak_rss_mb(measured.pid)
            health = get(f"http://127.0.0.1:{port}/healthz")
            stop.set()
        finally:
            for p in reversed(procs):  # the measured agent first, then its meter
                p.terminate()
                p.wait(10)

    cpu_pct = 100.0 * (cpu1 - cpu0) / elapsed
    poller = health["poller"]
    figures = {
        "transport": args.transport,
        "seconds": round(elapsed, 1),
        "rss_mb_max": round(max(rss), 1),
        "rss_mb_mean": round(sum(rss) / len(rss), 1),
        "rss_mb_last": round(rss[-1], 1),
        "rss_mb_peak_ever": round(peak, 1),
        "cpu_pct_of_one_core": round(cpu_pct, 2),
        "readings": poller["readings"],
        "missed": poller["missed"],
        "late": poller["late"],
        "max_lateness_ms": round(poller["max_lateness_ms"], 1),
        "rate_hz": round(poller["rate_hz"], 3),
        "served_to_pc_up_to_seq": got[0],
        "spool_commits": health["spool"]["commits"],
        "rss_goal_mb": RSS_GOAL_MB,
        "cpu_goal_pct": CPU_GOAL_PCT,
        "meets_goals": max(rss) < RSS_GOAL_MB and cpu_pct < CPU_GOAL_PCT,
    }
    print(json.dumps(figures, indent=2))
    if not figures["meets_goals"]:
        print(f"goal NOT met: RSS < {RSS_GOAL_MB:g} MB and CPU < {CPU_GOAL_PCT:g} % of a core")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
