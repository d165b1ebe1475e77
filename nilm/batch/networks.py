"""What the two networks share: training on windows with the imbalance options, and prediction.

Training is seeded and leaves torch's global random state as it found it.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nilm.batch.imbalance import class_weights, focal_loss, smote
from nilm.batch.model import BatchClassifier, EventSamples, FloatArray, IntArray

__all__ = ["WindowNetworkClassifier"]


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run with `n` torch threads, then restore the process's setting."""
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class WindowNetworkClassifier(BatchClassifier):
    """A torch network on `EventSamples.windows`, trained with Adam.

    Parameters
    ----------
    imbalance
        'none', 'smote' (on the flattened windows), 'class_weight' (weighted cross-entropy) or
        'focal' (focal loss, `gamma` = `focal_gamma`, no class weights).
    seed
        Seeds the initial weights, the batches and SMOTE.
    epochs, min_steps
        Passes over the data, raised so that at least `min_steps` updates are made.
    batch_size, learning_rate, weight_decay
        The optimiser's settings.
    n_threads
        Torch threads while training and predicting, restored afterwards. Networks this small
        gain nothing from more than one, and on a busy 2-core machine two threads spinning
        against other work made training ten times slower than one.
    """

    needs_windows = True

    def __init__(
        self,
        imbalance: str = "none",
        seed: int = 0,
        epochs: int = 20,
        min_steps: int = 200,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-4,
        focal_gamma: float = 2.0,
        n_threads: int = 1,
    ) -> None:
        super().__init__(imbalance, seed)
        self.epochs = epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.focal_gamma = focal_gamma
        self.n_threads = n_threads
        self.net: nn.Module | None = None

    @abstractmethod
    def _build(self, channels: int, samples: int, n_classes: int) -> nn.Module: ...

    def _fit(self, samples: EventSamples, y: IntArray) -> None:
        with _threads(self.n_threads):
            self._train(samples, y)

    def _train(self, samples: EventSamples, y: IntArray) -> None:
        windows = np.asarray(samples.windows, dtype=np.float32)
        if self.imbalance == "smote":
            resampled, y = smote(windows, y, seed=self.seed)
            windows = resampled.astype(np.float32)
        n_classes = len(self.classes_)
        weight = (
            torch.tensor(class_weights(y, n_classes), dtype=torch.float32)
            if self.imbalance == "class_weight"
            else None
        )
        x = torch.from_numpy(windows)
        target = torch.from_numpy(y)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = self._build(int(x.shape[1]), int(x.shape[2]), n_classes)
            opt = torch.optim.Adam(
                net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
            )
            batches = max(1, math.ceil(len(x) / self.batch_size))
            epochs = max(self.epochs, math.ceil(self.min_steps / batches))
            generator = torch.Generator().manual_seed(self.seed)
            net.train()
            for _ in range(epochs):
                order = torch.randperm(len(x), generator=generator)
                for b in range(batches):
                    idx = order[b * self.batch_size : (b + 1) * self.batch_size]
                    logits: torch.Tensor = net(x[idx])
                    if self.imbalance == "focal":
                        loss = focal_loss(logits, target[idx], gamma=self.focal_gamma)
                    else:
                        loss = F.cross_entropy(logits, target[idx], weight=weight)
                    opt.zero_grad()
                    loss.backward()  # type: ignore[no-untyped-call]  # torch leaves it untyped
                    opt.step()
        net.eval()
        self.net = net

    def _predict_proba(self, samples: EventSamples) -> FloatArray:
        if self.net is None:
            raise ValueError(f"{self.name} has no network: fit with two devices or more first")
        x = torch.from_numpy(np.asarray(samples.windows, np.float32))
        with _threads(self.n_threads), torch.no_grad():
            logits: torch.Tensor = self.net(x)
            proba = torch.softmax(logits, dim=1).numpy().astype(np.float64)
        return proba
