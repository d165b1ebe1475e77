"""Bytewax dataflows, their sources and sinks, and the `nilm` command."""
