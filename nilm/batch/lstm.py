"""An LSTM over event windows, for the temporal pattern of a switch.

The window is averaged over `pool_s`-second steps first (120 s at 1 Hz becomes 40 steps), which
keeps the recurrence short enough to train in seconds on a CPU; the last hidden state, with the
mean of all hidden states, is read out by a linear layer.

References
----------
Hochreiter & Schmidhuber (1997). Long Short-Term Memory. Neural Computation 9(8).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nilm.batch.networks import WindowNetworkClassifier

__all__ = ["LstmClassifier"]


class _Lstm(nn.Module):
    def __init__(self, channels: int, n_classes: int, hidden: int, pool_s: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool1d(pool_s, ceil_mode=True) if pool_s > 1 else nn.Identity()
        self.lstm = nn.LSTM(channels, hidden, batch_first=True)
        self.head = nn.Linear(2 * hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps: torch.Tensor = self.pool(x)
        h, _ = self.lstm(steps.transpose(1, 2))
        out: torch.Tensor = self.head(torch.cat([h[:, -1], h.mean(dim=1)], dim=1))
        return out


class LstmClassifier(WindowNetworkClassifier):
    """An LSTM on `EventSamples.windows` (see `WindowNetworkClassifier` for the parameters).

    `hidden` is the LSTM's state size; `pool_s` the seconds averaged into one step.

    Examples
    --------
    >>> import numpy as np
    >>> from nilm.batch.model import EventSamples
    >>> w = np.zeros((20, 2, 16), np.float32)
    >>> w[10:, 0, 8:] = 1.0
    >>> s = EventSamples(np.zeros((20, 1)), w, ("x",))
    >>> m = LstmClassifier(min_steps=60, hidden=8, pool_s=2).fit(s, ["lamp"] * 10 + ["kettle"] * 10)
    >>> m.predict(s.take(np.array([0, 19])))
    ['lamp', 'kettle']
    """

    kind = "lstm"

    def __init__(
        self,
        imbalance: str = "none",
        seed: int = 0,
        hidden: int = 32,
        pool_s: int = 3,
        **options: Any,
    ) -> None:
        super().__init__(imbalance, seed, **options)
        self.hidden = hidden
        self.pool_s = pool_s

    def _build(self, channels: int, samples: int, n_classes: int) -> nn.Module:
        return _Lstm(channels, n_classes, self.hidden, self.pool_s)
