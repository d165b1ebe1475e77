"""A stand-in for `nilm run` with only the reading path: AgentSource → DuckDB sink, recovered.

`python -m tests.pi_agent.minimal_pc CONFIG` loads the same settings file as `nilm run`. The
end-to-end test uses it when `AGENT_E2E_PC=minimal`, to check the agent, the source, recovery and
the idempotent sink alone while the full pipeline is being changed by others.
"""

from __future__ import annotations

import logging
import sys
from datetime import timedelta

from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main

from flows.agent_source import AgentSource
from flows.app import recovery_config
from flows.database import open_database
from flows.sink import DuckDBSink
from nilm.settings import load_settings


def main(path: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    settings = load_settings(path)
    con = open_database(settings.db_path)
    flow = Dataflow("minimal_pc")
    chunks = op.input("readings_in", flow, AgentSource(settings.agent, settings.home_id))
    rows = op.map("readings_rows", chunks, lambda kv: ("readings", kv[1].batch))
    op.output("db", rows, DuckDBSink(con))
    try:
        run_main(
            flow, epoch_interval=timedelta(seconds=1), recovery_config=recovery_config(settings)
        )
    except KeyboardInterrupt:
        pass
    finally:
        con.close()


if __name__ == "__main__":
    main(sys.argv[1])
