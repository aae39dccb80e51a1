"""Reading the shards that ``python -m datamodules.shards`` writes, with litdata (imported here: the ``streaming``
extra; :mod:`datamodules.streaming` imports this module only after checking it is installed).

A split is one litdata dataset (``<input_dir>/<split>/index.json`` + ``chunk-*.bin``) whose items are
``{"index": i, "source": s, "image": <encoded bytes>, "label": y}`` (``i`` the item's position in the shards,
``s`` its index in the converted dataset), and whose ``index.json`` also holds
``"resattn": {"class_names": [...], "labels": [...]}`` (all labels, so that label noise and the class count need
no pass over the images). Training streams shuffled chunks through litdata's ``StreamingDataLoader``
(:class:`TrainingShards`); validation and test read items by position (:class:`ShardImages`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import litdata
import torch
from litdata.streaming.sampler import ChunkedIndex
from torch.utils.data import Dataset

from datamodules.resumable import sample_seed, seeded
from datamodules.streaming import INDEX_FILE, METADATA_KEY


def split_url(input_dir: str, split: str) -> str:
    """The location of one split: a sub-folder of a local folder or of a URL (``s3://bucket/shards/train``)."""
    return f"{input_dir.rstrip('/')}/{split}"


def open_split(
    input_dir: str,
    split: str,
    cache_dir: str,
    cls: type[litdata.StreamingDataset] = litdata.StreamingDataset,
    **options: Any,
) -> litdata.StreamingDataset:
    """The split as a ``cls``; a remote one caches its index and chunks under ``cache_dir``."""
    return cls(split_url(input_dir, split), cache_dir=cache_dir, **options)


def read_metadata(dataset: litdata.StreamingDataset, where: str) -> dict[str, Any]:
    """The converter's entry of the split's ``index.json`` (litdata has copied a remote one into its cache),
    checked against the number of items the index lists."""
    path = os.path.join(dataset.input_dir.path, INDEX_FILE)
    with open(path) as f:
        index = json.load(f)
    if METADATA_KEY not in index:
        raise ValueError(
            f"{where} has no class names and labels in its {INDEX_FILE}: it was not written by "
            "`python -m datamodules.shards`; convert the data with that command"
        )
    metadata = index[METADATA_KEY]
    items = sum(chunk["chunk_size"] for chunk in index["chunks"])
    if items != len(metadata["labels"]):
        raise ValueError(f"{where} holds {items} images but its {INDEX_FILE} lists {len(metadata['labels'])} labels")
    return metadata


class ShardImages(Dataset):
    """A split as ``(encoded bytes, label)`` items read by position (validation and test; the pool's labels).

    Positions are global (``len(dataset)`` is a DDP rank's share, but indexing is not): Lightning's
    DistributedSampler gives each rank its evaluation items. A remote split is read item by item (litdata's random
    access fetches only the item's bytes).
    """

    def __init__(self, dataset: litdata.StreamingDataset, labels: torch.Tensor) -> None:
        self.dataset = dataset
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[bytes, int]:
        item = self.dataset[int(index)]
        if item["index"] != index:
            raise ValueError(f"shard item {index} says it is item {item['index']}: the shards are out of order")
        return item["image"], int(self.labels[index])


class TrainingShards(litdata.StreamingDataset):
    """Shuffled training items as ``(transformed image, label)``: the label from ``labels`` (noisy labels
    included) and the random augmentation seeded by ``(seed, epoch, position in the shards)``, as
    :class:`datamodules.base.TransformedSubset` seeds it, so a resumed run sees the same augmentations."""

    transform_image: Callable[[bytes], Any] | None = None
    labels: torch.Tensor | None = None
    augmentation_seed: int = 0

    def __getitem__(self, index: ChunkedIndex | int) -> Any:
        item = super().__getitem__(index)
        if self.transform_image is None or self.labels is None:
            return item
        with seeded(sample_seed(self.augmentation_seed, self.current_epoch, item["index"])):
            image = self.transform_image(item["image"])
        return image, int(self.labels[item["index"]])
