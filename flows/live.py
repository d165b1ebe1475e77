"""The live flow for Bytewax's own runner: `python -m bytewax.run flows.live:flow`.

`nilm run` is the usual way to run the live flow (alone, or as a cluster with `--processes N`
or `--process-id K --addresses "host1:port;host2:port"`, where process 0 owns the database
files and the others only compute). This module serves whoever prefers Bytewax's runner on one
process: its `flow` is built on first access from the file named by `NILM_CONFIG`, over every
home the settings list, into the database files it opens:

    NILM_CONFIG=nilm.toml python -m bytewax.run flows.live:flow -r recovery -s 10 -b 60
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import duckdb
from bytewax.dataflow import Dataflow

from flows.database import open_database
from flows.fleet import fleet_flow, open_shards
from flows.hass import HassPublisher, start_publishers
from nilm.settings import Settings, load_settings

__all__ = ["live_flow"]


def live_flow(
    settings: Settings,
    connection: duckdb.DuckDBPyConnection,
    stop: Callable[[], bool] | None = None,
    publisher: HassPublisher | None = None,
) -> Dataflow:
    """Agent readings and labels through the dataflow into `connection`, until `stop()`.

    One database file (`settings.shards` 1). With a Home Assistant `publisher`, each write
    nudges it (it reads DuckDB on its own).
    """
    if settings.shards != 1:
        raise ValueError(f"live_flow writes one file; shards={settings.shards}: use fleet_flow")
    nudges = {0: publisher.nudge} if publisher is not None else None
    return fleet_flow(settings, {0: connection}, stop, on_write=nudges)


def __getattr__(name: str) -> Any:
    # Built on first access, so importing the module (tests, `nilm run`) opens no database.
    if name == "flow":
        settings = load_settings(os.environ.get("NILM_CONFIG"))
        connections = (
            open_shards(settings) if settings.shards > 1 else {0: open_database(settings.db_path)}
        )
        # They publish until the process ends; then the broker delivers their last will.
        publishers = start_publishers(connections, settings)
        nudges = {k: p.nudge for k, p in publishers.items()}
        return fleet_flow(settings, connections, on_write=nudges)
    raise AttributeError(name)
