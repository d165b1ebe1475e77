"""The live flow: the Pi agent's readings and the confirmed labels, into DuckDB.

`nilm run` builds it with `live_flow` and serves the dashboard beside it. To spread many homes
over several processes, Bytewax's own runner imports this module's `flow`, built on first access
from the file named by `NILM_CONFIG`; give each process its own `NILM_DB_PATH`, because a DuckDB
file has one owner:

    NILM_CONFIG=nilm.toml NILM_DB_PATH=nilm-0.duckdb \\
        python -m bytewax.run flows.live:flow -i 0 -a "pc1:2101;pc2:2101" -r recovery -s 10 -b 60
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import duckdb
from bytewax.dataflow import Dataflow

from flows.agent_source import AgentSource
from flows.database import open_database
from flows.dataflow import get_flow
from flows.hass import HassPublisher, feeding, start_publisher
from flows.sink import DuckDBSink
from flows.sources import LabelSource, StoppableSource
from nilm.settings import Settings, load_settings

__all__ = ["live_flow"]


def live_flow(
    settings: Settings,
    connection: duckdb.DuckDBPyConnection,
    stop: Callable[[], bool] | None = None,
    publisher: HassPublisher | None = None,
) -> Dataflow:
    """Agent readings and labels through the dataflow into `connection`, until `stop()`.

    With a Home Assistant `publisher`, each write nudges it (it reads DuckDB on its own).
    """
    readings: Any = AgentSource(settings.agent, settings.home_id)
    if stop is not None:
        readings = StoppableSource(readings, stop)
    labels = LabelSource(connection, settings.label_poll_s, stop)
    return get_flow(settings, readings, feeding(DuckDBSink(connection), publisher), labels)


def __getattr__(name: str) -> Any:
    # Built on first access, so importing the module (tests, `nilm run`) opens no database.
    if name == "flow":
        settings = load_settings(os.environ.get("NILM_CONFIG"))
        con = open_database(settings.db_path)
        # It publishes until the process ends; then the broker delivers its last will.
        return live_flow(settings, con, publisher=start_publisher(con, settings))
    raise AttributeError(name)
