"""The Health part of the last page: a device that draws more, runs longer or cycles more than
it used to. Its cards are rebuilt only when the alerts change.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import pandas as pd
import panel as pn

from dashboards.store import DataStore
from dashboards.widgets import when

__all__ = ["HealthView"]

log = logging.getLogger(__name__)


class HealthView(pn.viewable.Viewer):
    """Health alerts: a device that draws more, runs longer or cycles more than it used to."""

    def __init__(self, store: DataStore, **params: Any) -> None:
        super().__init__(**params)
        self.store = store
        self.cards = pn.Column(sizing_mode="stretch_width")
        self._shown: pd.DataFrame | None = None
        self.refresh()

    def refresh(self) -> None:
        alerts = self.store.alerts()
        if self._shown is not None and alerts.equals(self._shown):
            return
        self._shown = alerts
        if alerts.empty:
            self.cards.objects = [
                pn.pane.Alert(
                    "No health alerts: every known device behaves as it used to.",
                    alert_type="success",
                )
            ]
            return
        cards = []
        for row in alerts.itertuples(index=False):
            change = "" if pd.isna(row.change) else f" ({row.change:+.0%})"
            before = "—" if pd.isna(row.before_value) else f"{row.before_value:,.1f}"
            after = "—" if pd.isna(row.after_value) else f"{row.after_value:,.1f}"
            cards.append(
                pn.pane.Alert(
                    f"<b>{html.escape(str(row.device))}</b>: {html.escape(str(row.message))}"
                    f"<br><small>{html.escape(str(row.metric))}: {before} → {after}{change} · "
                    f"since {when(row.since)} UTC · noticed {when(row.ts)} UTC</small>",
                    alert_type="warning",
                )
            )
        self.cards.objects = cards

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(
            pn.pane.Markdown("### Health alerts"), self.cards, sizing_mode="stretch_width"
        )
