"""Answers to class imbalance: balanced class weights, SMOTE oversampling and focal loss.

A home's fridge switches fifty times a day and its EV charger twice a week, so the confirmations
a user gives are as lopsided as the events. Class weights rescale each class's loss by the
inverse of its frequency; SMOTE (Chawla et al. 2002) adds synthetic minority samples on the
segments between a sample and its nearest same-class neighbours; focal loss (Lin et al. 2017)
scales each sample's cross-entropy by `(1 - p_true) ** gamma`, so the many easy examples stop
dominating the gradient.

References
----------
Chawla, Bowyer, Hall & Kegelmeyer (2002). SMOTE: Synthetic Minority Over-sampling Technique.
JAIR 16, 321-357.
Lin, Goyal, Girshick, He & Dollár (2017). Focal Loss for Dense Object Detection. ICCV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

__all__ = ["class_weights", "focal_loss", "smote"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def class_weights(y: IntArray, n_classes: int) -> FloatArray:
    """Balanced weights `n / (classes present * count)`; 0 for a class with no sample.

    >>> class_weights(np.array([0, 0, 0, 1]), 2).tolist()
    [0.6666666666666666, 2.0]
    """
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    present = int(np.count_nonzero(counts))
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, len(y) / (present * counts), 0.0)
    return weights


def smote(
    x: npt.NDArray[np.floating], y: IntArray, seed: int = 0, k_neighbors: int = 5
) -> tuple[FloatArray, IntArray]:
    """`x` and `y` with every class oversampled by SMOTE to the largest class's count.

    A class with a single sample cannot be interpolated: it is duplicated first, so its
    synthetic samples are copies. `k_neighbors` shrinks to what the smallest class allows.

    Examples
    --------
    >>> x = np.arange(14, dtype=float).reshape(7, 2)
    >>> xs, ys = smote(x, np.array([0, 0, 0, 0, 1, 1, 2]))
    >>> np.bincount(ys).tolist(), len(xs)
    ([4, 4, 4], 12)
    """
    from imblearn.over_sampling import SMOTE

    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    counts = np.bincount(y)
    if len(np.flatnonzero(counts)) < 2:
        return flat.reshape(x.shape).astype(np.float64), y
    singles = np.flatnonzero(counts == 1)
    if len(singles):
        extra = np.flatnonzero(np.isin(y, singles))
        flat = np.concatenate([flat, flat[extra]])
        y = np.concatenate([y, y[extra]])
        counts = np.bincount(y)
    k = max(1, min(k_neighbors, int(counts[counts > 0].min()) - 1))
    sampler = SMOTE(k_neighbors=k, random_state=seed)
    xs, ys = sampler.fit_resample(flat, y)
    return (
        np.asarray(xs, dtype=np.float64).reshape((-1, *x.shape[1:])),
        np.asarray(ys, dtype=np.int64),
    )


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean focal loss of `logits` (n, classes) against class indices `target` (n,).

    `gamma = 0` and no `weight` give plain cross-entropy. `weight` (classes,) is the optional
    per-class alpha.

    Examples
    --------
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> target = torch.tensor([0, 0])
    >>> ce = torch.nn.functional.cross_entropy(logits, target)
    >>> bool(torch.isclose(focal_loss(logits, target, gamma=0.0), ce))
    True
    >>> bool(focal_loss(logits, target, gamma=2.0) < ce)
    True
    """
    import torch.nn.functional as F

    log_p = F.log_softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    loss = -((1.0 - log_p.exp()) ** gamma) * log_p
    if weight is not None:
        loss = loss * weight[target]
    return loss.mean()
