"""The Unknowns part of the last page: groups of alike events that nobody has named yet, with
examples; naming one labels all its events. Named groups leave the list.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable
from typing import Any

import pandas as pd
import panel as pn

from dashboards.store import DataStore
from dashboards.widgets import NUMBER_FORMATTERS, Selection, as_text_times, message, say

__all__ = ["UnknownsView"]

log = logging.getLogger(__name__)


class UnknownsView(pn.viewable.Viewer):
    """Devices the models have not been taught: clusters of similar events, with examples."""

    def __init__(
        self,
        store: DataStore,
        read_only: bool = False,
        selection: Selection | None = None,
        on_label: Callable[[], None] | None = None,
        **params: Any,
    ) -> None:
        super().__init__(**params)
        self.store = store
        self.read_only = read_only
        self.selection = selection or Selection()
        self.on_label = on_label
        self.clusters = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, selectable=1, show_index=False,
            sizing_mode="stretch_width",
            titles={"cluster_id": "cluster", "n_events": "events",
                    "typical_delta_p_w": "typical ΔP (W)", "legs": "legs",
                    "last_seen": "last seen (UTC)", "name": "named"},
            layout="fit_data_stretch",
            formatters={"typical_delta_p_w": {"type": "money", "symbol": "", "precision": 0}},
        )  # fmt: skip
        self.examples = pn.widgets.Tabulator(
            pd.DataFrame(), disabled=True, show_index=False, sizing_mode="stretch_width",
            hidden_columns=["event_id"],
            titles={"ts": "time (UTC)", "delta_p_w": "ΔP (W)", "legs": "legs",
                    "delta_q_var": "ΔQ (var)", "inrush_peak_w": "inrush (W)",
                    "novelty": "novelty"},
            layout="fit_data_stretch",
            formatters={"novelty": NUMBER_FORMATTERS["novelty"],
                        "delta_p_w": NUMBER_FORMATTERS["delta_p_w"],
                        "delta_q_var": NUMBER_FORMATTERS["delta_p_w"],
                        "inrush_peak_w": NUMBER_FORMATTERS["delta_p_w"]},
        )  # fmt: skip
        self.examples.on_click(self._example_clicked)
        self.name_input = pn.widgets.TextInput(
            label="Name this device", placeholder="e.g. well pump", width=240
        )
        self.name_button = pn.widgets.Button(
            label="Name it (labels all its events)", color="primary",
            disabled=read_only,
        )  # fmt: skip
        self.name_button.on_click(lambda e: self.name_selected(self.name_input.value))
        self.message = message()
        self.count = pn.pane.HTML("")
        self.clusters.param.watch(lambda e: self._show_examples(), "selection")
        self.refresh()

    def selected_cluster(self) -> str | None:
        frame = self.clusters.value
        if frame is None or frame.empty:
            return None
        index = self.clusters.selection[0] if self.clusters.selection else 0
        return str(frame.iloc[index]["cluster_id"]) if index < len(frame) else None

    def refresh(self) -> None:
        # Only groups nobody has named: a named one is a device now (two groups given one
        # name are one device, on the Devices page).
        frame = as_text_times(self.store.clusters(), "last_seen").drop(columns=["named"])
        if not frame.equals(self.clusters.value):
            self.clusters.value = frame.reset_index(drop=True)
            if len(frame) and not self.clusters.selection:
                self.clusters.selection = [0]
        self.count.object = (
            f"{len(frame)} group{'s' if len(frame) != 1 else ''} of events that look alike but "
            "nobody has named yet. Name one, and every event in it is labelled."
            if len(frame)
            else "No unnamed groups: every group of alike events has a name "
            "(or the flow has not clustered any yet)."
        )
        self._show_examples()

    def _show_examples(self) -> None:
        cluster = self.selected_cluster()
        examples = self.store.cluster_examples()
        if len(examples):
            examples = examples[examples["cluster_id"] == cluster]
        cols = ["ts", "delta_p_w", "legs", "delta_q_var", "inrush_peak_w", "novelty", "event_id"]
        frame = (
            as_text_times(examples[cols], "ts").reset_index(drop=True)
            if len(examples)
            else pd.DataFrame()
        )
        if not frame.equals(self.examples.value):
            self.examples.value = frame

    def _example_clicked(self, event: Any) -> None:
        if event.row is None or event.row >= len(self.examples.value):
            return
        self.selection.event_id = None
        self.selection.event_id = str(self.examples.value.iloc[event.row]["event_id"])
        self.selection.page = "Live"

    def name_selected(self, device: Any) -> list[int]:
        """Label every event of the chosen cluster `device`; returns the new label ids."""
        cluster = self.selected_cluster()
        if cluster is None:
            say(self.message, "There is no unknown cluster to name.", "warning")
            return []
        try:
            ids = self.store.label_cluster(cluster, "" if device is None else str(device))
        except ValueError as err:
            say(self.message, html.escape(str(err)), "danger")
            return []
        say(
            self.message,
            f"Stored {len(ids)} labels: cluster {html.escape(cluster)} is "
            f"<b>{html.escape(' '.join(str(device).split()))}</b>. The flow learns them now.",
            "success",
        )
        self.name_input.value = ""
        self.refresh()
        if self.on_label is not None:
            self.on_label()
        return ids

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("### Unknown devices"),
            self.count,
            self.clusters,
            pn.pane.Markdown("**Latest events of the chosen group** (click one to see it)"),
            self.examples,
            pn.Row(self.name_input, pn.Column(pn.Spacer(height=18), self.name_button)),
            self.message,
            sizing_mode="stretch_width",
        )
