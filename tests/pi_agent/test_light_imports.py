"""The Pi agent must not drag the PC side onto a 512 MB Pi Zero (ARCHITECTURE.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# aiohttp too: the agent serves and polls with the standard library (pi_agent/httpd.py).
FORBIDDEN = ("bytewax", "river", "duckdb", "panel", "holoviews", "bokeh", "pandas", "pyarrow",
             "numba", "flows", "dashboards", "aiohttp")  # fmt: skip

PROBE = textwrap.dedent(
    """
    import json, sys, asyncio
    import pi_agent, pi_agent.__main__, pi_agent.agent, pi_agent.ble, pi_agent.config
    import pi_agent.poller, pi_agent.server, pi_agent.sim, pi_agent.spool, pi_agent.transports
    from pi_agent.agent import Agent
    from pi_agent.config import AgentConfig
    # Build and run a sim agent briefly, so lazily imported modules count too.
    async def main():
        cfg = AgentConfig(transport="sim", port=0, spool=sys.argv[1], speed=1000.0,
                          duration_s=5.0, commit_interval_s=0.0, start="2026-01-05T00:00:00Z")
        agent = Agent(cfg, "t")
        ready = asyncio.Event()
        task = asyncio.create_task(agent.run(ready))
        await ready.wait()
        while not agent.poller.finished:
            await agent.commits.wait(1.0)
        agent.stop()
        await task
    asyncio.run(main())
    print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)))
    """
)


def test_the_agent_imports_no_pc_side_package(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "spool.db")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert {"pi_agent", "nilm", "numpy"} <= loaded
    assert sorted(loaded & set(FORBIDDEN)) == []
