"""Training batches that a run killed mid-epoch can resume exactly (with the same augmentations).

The shuffled order of an epoch depends only on ``(seed, epoch)``, the sampler hands the dataset
``(epoch, index)`` keys so that each sample's random augmentation is seeded by ``(seed, epoch, index)``
(independent of workers and of where the run started), and the loader tells Lightning, through
``state_dict``, how many batches of the epoch it has handed out. Lightning stores that state in every
checkpoint and gives it back on resume, and the loader then skips exactly those batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

_MIX = 0x9E3779B97F4A7C15  # 64-bit golden-ratio constant: spreads nearby (seed, epoch, index) triples


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed that is a pure function of ``(seed, epoch, index)``."""
    value = seed
    for part in (epoch, index):
        value = (value * _MIX + part + 1) % (1 << 63)
    return value


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU generator seeded, restoring the outer stream afterwards."""
    with torch.random.fork_rng(devices=[]):
        # only the CPU generator: torch.manual_seed would also queue a lazy seeding of every accelerator,
        # formatting a Python stack trace each time, for every sample
        torch.default_generator.manual_seed(seed)
        yield


class EpochSampler(Sampler[tuple[int, int]]):
    """A seeded shuffle of ``range(length)`` per epoch, yielding ``(epoch, index)`` keys from ``start``."""

    def __init__(self, length: int, seed: int) -> None:
        self.length = length
        self.seed = seed
        self.epoch = 0
        self.start = 0  # samples of this epoch to skip (set when resuming)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        order = torch.randperm(self.length, generator=generator).tolist()
        start, self.start = self.start, 0
        return ((self.epoch, index) for index in order[start:])


class EpochPosition:
    """A loader's position in its epoch, checkpointable: Lightning saves ``state_dict()`` (the epoch and the batches
    handed out) in checkpoints and gives it back through ``load_state_dict`` before the resumed epoch starts, when
    :meth:`_start_epoch` says how many batches to skip. Sized loaders are not prefetched, so the count is exact."""

    _epoch = 0
    _batches = 0  # batches of _epoch handed out so far
    _resume: dict[str, int] | None = None

    def _start_epoch(self, epoch: int, length: int) -> int:
        """Begin ``epoch`` of ``length`` batches; the batches to skip: those a loaded state of this epoch handed out."""
        resume, self._resume = self._resume, None
        skip = (
            resume["batches"] if resume is not None and resume["epoch"] == epoch and resume["batches"] < length else 0
        )
        self._epoch, self._batches = epoch, skip
        return skip

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self._epoch, "batches": self._batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state)


class ResumableLoader(EpochPosition, DataLoader):
    """Shuffled ``drop_last`` training batches over an :class:`EpochSampler`, checkpointable mid-epoch."""

    def __init__(self, dataset: Dataset, *, batch_size: int, seed: int, **kwargs: Any) -> None:
        super().__init__(
            dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed), drop_last=True, **kwargs
        )

    def __iter__(self) -> Iterator[Any]:
        self.sampler.start = self._start_epoch(self.sampler.epoch, len(self)) * self.batch_size
        for batch in super().__iter__():
            self._batches += 1
            yield batch
