"""The datasets every datamodule builds its splits from: images held in memory, and a split's view of a dataset with its
own transform."""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from datamodules.errors import DamagedDataError
from datamodules.resumable import sample_seed, seeded


class TensorImageDataset(Dataset):
    """In-memory uint8 images ``(N, C, H, W)`` with integer labels; an item is a ``(C, H, W)`` uint8 tensor."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class TransformedSubset(Dataset):
    """``indices`` into ``dataset`` with this split's own transform (train and val share one decoded dataset).

    An ``(epoch, index)`` key (from :class:`datamodules.resumable.EpochSampler`) seeds the item's random
    augmentation with ``(seed, epoch, index)``, so augmentations do not depend on workers or restarts.
    """

    def __init__(
        self, dataset: Dataset, indices: Sequence[int], transform: Callable[[Any], Any], seed: int = 0
    ) -> None:
        self.dataset = dataset
        self.indices = list(indices)
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Any, int]:
        if isinstance(key, tuple):
            epoch, index = key
            image, label = self.dataset[self.indices[index]]
            with seeded(sample_seed(self.seed, epoch, index)):
                return self._transformed(image, self.indices[index]), label
        image, label = self.dataset[self.indices[key]]
        return self._transformed(image, self.indices[key]), label

    def _transformed(self, image: Any, position: int) -> Any:
        """``transform(image)``; an image that cannot be decoded is named by the dataset where it can
        (``damaged_item(position, error)``: the shards' item and chunk, say)."""
        try:
            return self.transform(image)
        except DamagedDataError as err:
            name = getattr(self.dataset, "damaged_item", None)
            if name is None:
                raise
            raise name(position, err) from err
