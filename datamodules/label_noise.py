"""Synthetic label noise for the noisy-label experiment (docs/paper.md §5.2, Table 5; ambiguity §7 item 14).

Each training label ``y`` is replaced by a draw from row ``y`` of a confusion matrix ``Q`` with
``Q[i][i] = r`` and ``Q[i][j] = (1 - r) / (K - 1)`` for ``j != i`` (r = clean-label ratio, K classes).
This project's **noise level is ``1 - r``**: since the off-diagonal mass never lands on the true class, it is
also the *expected* fraction of labels that change. The *realised* fraction differs by sampling noise only
(binomial: about ±0.2 % at 45k labels); :func:`flip_fraction` measures it and the datamodule logs it.
Draws depend only on the clean labels, ``Q`` and the seed, so a fixed seed gives the same noisy labels on
every machine, whatever subset of the training pool is used afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset, Subset

from datamodules.datasets import TransformedSubset


def transition_matrix(num_classes: int, noise: float) -> torch.Tensor:
    """``Q`` (float64, K x K): ``1 - noise`` on the diagonal, ``noise / (K - 1)`` elsewhere (docs/paper.md §5.2)."""
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    if not 0.0 <= noise < 1.0:
        raise ValueError(f"label_noise must be in [0, 1) (it is 1 - r, r = clean-label ratio), got {noise}")
    q = torch.full((num_classes, num_classes), noise / (num_classes - 1), dtype=torch.float64)
    q.fill_diagonal_(1.0 - noise)
    return q


def apply_transition(labels: torch.Tensor, q: torch.Tensor, seed: int) -> torch.Tensor:
    """Noisy labels: label ``i`` becomes ``j`` with probability ``q[i, j]``, independently per sample.

    Pure and deterministic: the result depends only on ``labels``, ``q`` and ``seed``.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    k = q.shape[0]
    if q.ndim != 2 or q.shape[1] != k:
        raise ValueError(f"the transition matrix must be square, got shape {tuple(q.shape)}")
    if not torch.allclose(q.sum(dim=1), torch.ones(k, dtype=q.dtype)) or (q < 0).any():
        raise ValueError("every row of the transition matrix must be a probability distribution")
    if labels.numel() and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k - 1}] for a {k}x{k} transition matrix")
    uniform = torch.rand(labels.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    cumulative = q.cumsum(dim=1)[labels]
    return (cumulative <= uniform.unsqueeze(-1)).sum(dim=-1).clamp_max(k - 1)


def noisy_labels(labels: torch.Tensor, num_classes: int, noise: float, seed: int) -> torch.Tensor:
    """``labels`` passed through the paper's symmetric confusion matrix at noise level ``noise`` (= 1 - r)."""
    return apply_transition(labels, transition_matrix(num_classes, noise), seed)


def flip_fraction(clean: torch.Tensor, noisy: torch.Tensor, indices: Sequence[int] | None = None) -> float:
    """Fraction of labels that differ (over ``indices`` only when given): the realised noise level."""
    changed = torch.as_tensor(clean) != torch.as_tensor(noisy)
    if indices is not None:
        changed = changed[torch.as_tensor(list(indices), dtype=torch.long)]
    return float(changed.double().mean()) if changed.numel() else 0.0


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The integer labels of every item of ``dataset``, read without decoding images.

    Supports in-memory datasets (``labels``), torchvision datasets (``targets``), and a ``Subset`` or a split
    (:class:`~datamodules.datasets.TransformedSubset`) of those.
    """
    if isinstance(dataset, (Subset, TransformedSubset)):
        return dataset_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    for attribute in ("labels", "targets"):
        if hasattr(dataset, attribute):
            return torch.as_tensor(getattr(dataset, attribute), dtype=torch.long)
    raise TypeError(
        f"label noise needs a dataset exposing its labels (.labels or .targets); {type(dataset).__name__} has neither"
    )


class RelabeledDataset(Dataset):
    """``dataset`` with its labels replaced by ``labels`` (same order); images are read from ``dataset``."""

    def __init__(self, dataset: Dataset, labels: torch.Tensor) -> None:
        if len(dataset) != len(labels):
            raise ValueError(f"{len(dataset)} items but {len(labels)} labels")
        self.dataset = dataset
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[object, int]:
        return self.dataset[index][0], int(self.labels[index])
