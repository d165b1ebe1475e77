"""The pure core of the home energy monitor: records, parsing, simulation, detection, models."""

from nilm.records import Event, Reading, ReadingBatch, Rejection, TruthEvent

__all__ = ["Event", "Reading", "ReadingBatch", "Rejection", "TruthEvent"]
