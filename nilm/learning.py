"""The per-home learner: recognises each event's device and learns from confirmations.

`HomeLearner` is what the dataflow keeps in its state for each home. It answers every event and
every label with rows for the DuckDB tables (`TableRow`), so the flow stays a thin shell.
This first version predicts nothing: every event is stored as unknown.
"""

from __future__ import annotations

from typing import Any

from nilm.records import Event, Label

__all__ = ["HomeLearner", "TableRow", "event_row"]

# (table, row): the sink upserts the row by the table's key.
TableRow = tuple[str, dict[str, Any]]


def event_row(
    event: Event,
    device: str | None = None,
    confidence: float | None = None,
    novelty: float | None = None,
    uncertainty: float | None = None,
    cluster_id: str | None = None,
    labelled: bool = False,
) -> TableRow:
    """The `events` row of an event and what is known of its device."""
    return (
        "events",
        {
            "event_id": event.event_id,
            "home_id": event.home_id,
            "ts": event.ts,
            "legs": event.legs,
            "delta_p_w": event.delta_p_w,
            "device": device,
            "confidence": confidence,
            "novelty": novelty,
            "uncertainty": uncertainty,
            "cluster_id": cluster_id,
            "delta_q_var": event.delta_q_var,
            "delta_s_va": event.delta_s_va,
            "delta_current_a": event.delta_current_a,
            "delta_pf": event.delta_pf,
            "p_before_w": event.p_before_w,
            "p_after_w": event.p_after_w,
            "delta_p_a_w": event.delta_p_a_w,
            "delta_p_b_w": event.delta_p_b_w,
            "voltage_v": event.voltage_v,
            "inrush_peak_w": event.inrush_peak_w,
            "ramp_s": event.ramp_s,
            "settle_slope_w_per_s": event.settle_slope_w_per_s,
            "detector": event.detector,
            "labelled": labelled,
        },
    )


class HomeLearner:
    """Keeps the models of one home; `on_event` predicts, `on_label` learns."""

    def __init__(self, home_id: str) -> None:
        self.home_id = home_id

    def on_event(self, event: Event) -> list[TableRow]:
        return [event_row(event)]

    def on_label(self, label: Label) -> list[TableRow]:
        return []
