"""`python -m pi_agent`: the Pi agent (see CONTRACT.md and the README's installation guide)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from pi_agent.config import TRANSPORTS, AgentConfig, load_config

logger = logging.getLogger("pi_agent")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pi_agent",
        description="Read a Shelly Pro 3EM at 1 Hz, spool every reading, serve them to the PC.",
    )
    p.add_argument("--config", help="TOML file (see pi_agent/deploy/agent.example.toml)")
    p.add_argument("--transport", choices=TRANSPORTS)
    p.add_argument("--host", help="address to serve on (0.0.0.0 for the PC on the LAN)")
    p.add_argument("--port", type=int, help="HTTP API port (default 8765)")
    p.add_argument("--spool", help="SQLite spool file")
    p.add_argument("--token", help="bearer token the PC must send (or NILM_AGENT_TOKEN)")
    p.add_argument("--token-file", dest="token_file", help="file holding the bearer token")
    p.add_argument("--interval", dest="interval_s", type=float, help="seconds between polls")
    p.add_argument(
        "--commit-interval",
        dest="commit_interval_s",
        type=float,
        help="seconds between spool commits (default 0.5: each reading as it comes)",
    )
    p.add_argument("--retention-days", dest="retention_days", type=float)
    p.add_argument("--max-spool-mb", dest="max_spool_mb", type=float)
    p.add_argument("--request-timeout", dest="request_timeout_s", type=float)
    p.add_argument("--ble-address", dest="ble_address", help="the Shelly's BLE MAC address")
    p.add_argument("--ble-name", dest="ble_name", help="or its advertised name")
    p.add_argument("--ble-adapter", dest="ble_adapter", help="e.g. hci0")
    p.add_argument("--shelly-url", dest="shelly_url", help="http transport: http://SHELLY-IP")
    p.add_argument("--seed", type=int, help="sim: household seed")
    p.add_argument("--home-id", dest="home_id", help="sim: household id")
    p.add_argument("--start", help="sim: virtual start time, ISO 8601 UTC (default now)")
    p.add_argument("--speed", type=float, help="sim: virtual seconds per real second")
    p.add_argument(
        "--duration",
        dest="duration_s",
        type=float,
        help="sim: stop producing after this many virtual seconds",
    )
    p.add_argument(
        "--backfill",
        action="store_true",
        default=None,
        help="sim: produce the readings from --start up to now at once, then go live",
    )
    p.add_argument("--log-level", dest="log_level")
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    path = args.pop("config")
    try:
        config: AgentConfig = load_config(path, **args)
        token = config.resolved_token()
    except (ValueError, OSError) as err:
        print(f"pi_agent: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not token:
        print(
            "pi_agent: no bearer token: pass --token, --token-file or set NILM_AGENT_TOKEN "
            "(the PC sends the same one as agent.token)",
            file=sys.stderr,
        )
        return 2

    from pi_agent.agent import Agent

    async def run() -> None:
        agent = Agent(config, token)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
