"""Deterministic splits and subsets (docs/design.md §5): a seeded order of a dataset's items, the validation split
carved from the training set, a prefix of either as a smaller subset."""

import os

import torch


def global_seed() -> int:
    """The seed given to ``lightning.seed_everything`` (0 without one): shuffling and augmentation follow it."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def seeded_order(n: int, seed: int) -> list[int]:
    """A permutation of ``range(n)`` that depends only on ``n`` and ``seed``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministically split ``range(n)`` into ``(kept, carved)``, carving ``round(n * fraction)`` (at least 1).

    Both lists are in the seeded random order, so taking a prefix gives a class-balanced random subset.
    """
    order = seeded_order(n, seed)
    carved = min(n, max(1, round(n * fraction))) if fraction > 0 else 0
    return order[carved:], order[:carved]


def limited(indices: list[int], limit: int | None) -> list[int]:
    """The first ``limit`` of ``indices`` (all when None), sorted for sequential reads."""
    return sorted(indices if limit is None else indices[:limit])
