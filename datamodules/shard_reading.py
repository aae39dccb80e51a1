"""Reading the shards that ``python -m datamodules.shards`` writes, with litdata (imported here: the ``streaming``
extra; :mod:`datamodules.streaming` imports this module only after checking it is installed).

The format (a litdata dataset per split, plus the converter's labels and class names) is
:mod:`datamodules.shard_format`. Training streams shuffled chunks through litdata's ``StreamingDataLoader``
(:class:`TrainingShards`); validation and test read items by position (:class:`ShardImages`).

Damaged shards give one message naming the file and the remedy (:class:`datamodules.errors.DamagedDataError`): a local
split is checked before training (:func:`check_split`: its index readable, every chunk it lists present at the size
it lists, one ``stat`` per chunk), and a chunk that cannot be read during training (a remote one that does not
arrive, a local one removed since) or an image that cannot be decoded is named at the step where it happens,
instead of litdata's report of a timed-out download.
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

from datamodules.errors import DamagedDataError
from datamodules.resumable import sample_seed, seeded
from datamodules.shard_format import INDEX_FILE, split_url

REMEDY = (
    "copy the shards again from where they were written, or write them again with `python -m datamodules.shards "
    "OUT data=<choice> ...` (README: Data at scale); rerunning the command then resumes the run"
)


def check_split(split_dir: str) -> None:
    """A local split as litdata needs it: ``index.json`` readable, and each chunk it lists present at the size it
    lists (uncompressed chunks, as the converter writes them). A damaged copy is a :class:`DamagedDataError` naming
    the file, here, rather than litdata waiting for a chunk it takes for a download in progress."""
    path = os.path.join(split_dir, INDEX_FILE)
    try:
        with open(path) as f:
            index = json.load(f)
        chunks, compressed = index["chunks"], index["config"].get("compression")
        expected = {chunk["filename"]: int(chunk["chunk_bytes"]) for chunk in chunks}
    except FileNotFoundError:
        raise DamagedDataError(f"the shards lack {path}: {REMEDY}") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DamagedDataError(f"the shards' index {path} is damaged ({type(err).__name__}: {err}): {REMEDY}") from None
    for name, size in expected.items():
        chunk = os.path.join(split_dir, name)
        try:
            found = os.stat(chunk).st_size
        except FileNotFoundError:
            raise DamagedDataError(f"shard chunk {chunk} is missing ({path} lists it): {REMEDY}") from None
        if not compressed and found != size:
            raise DamagedDataError(
                f"shard chunk {chunk} has {found} bytes, not the {size} that {path} lists (truncated or "
                f"overwritten): {REMEDY}"
            )


def unreadable_chunk(dataset: litdata.StreamingDataset, error: FileNotFoundError) -> DamagedDataError:
    """The error of a chunk litdata could not read during training (``ChunkWaitTimeoutError``, a FileNotFoundError):
    named, with what to check, instead of litdata's report of a hung download."""
    chunk = getattr(error, "path", None) or error.filename or "?"
    source = dataset.input_dir.url or dataset.input_dir.path
    if dataset.input_dir.url:
        return DamagedDataError(
            f"shard chunk {os.path.basename(chunk)} of {source} did not arrive in the cache ({chunk}): check that "
            f"the object exists in {source} and that the store is reachable, then rerun the command (it resumes)"
        )
    problem = "is shorter than its index lists" if os.path.exists(chunk) else "is missing"
    return DamagedDataError(f"shard chunk {chunk} {problem}: {REMEDY}")


def open_split(
    input_dir: str,
    split: str,
    cache_dir: str,
    cls: type[litdata.StreamingDataset] = litdata.StreamingDataset,
    **options: Any,
) -> litdata.StreamingDataset:
    """The split as a ``cls``; a remote one caches its index and chunks under ``cache_dir``."""
    return cls(split_url(input_dir, split), cache_dir=cache_dir, **options)


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
        try:
            item = self.dataset[int(index)]
        except FileNotFoundError as err:
            raise unreadable_chunk(self.dataset, err) from err
        if item["index"] != index:
            raise ValueError(f"shard item {index} says it is item {item['index']}: the shards are out of order")
        return item["image"], int(self.labels[index])

    def damaged_item(self, index: int, error: DamagedDataError) -> DamagedDataError:
        """An image of the split that cannot be decoded, named (see :class:`datamodules.datasets.TransformedSubset`)."""
        return damaged_image(self.dataset, index, error)


def damaged_image(dataset: litdata.StreamingDataset, index: int, error: DamagedDataError) -> DamagedDataError:
    """Shard item ``index`` of ``dataset`` could not be decoded: its source image was damaged when it was converted
    (the converter keeps a file's bytes), so the fix is at the source."""
    where = dataset.input_dir.url or dataset.input_dir.path
    return DamagedDataError(
        f"shard item {index} of {where}: {error}. The converter copied the image's file as it was: fix or remove that "
        "image in the converted data and write the shards again (python -m datamodules.shards)"
    )


class TrainingShards(litdata.StreamingDataset):
    """Shuffled training items as ``(transformed image, label)``: the label from ``labels`` (noisy labels
    included) and the random augmentation seeded by ``(seed, epoch, position in the shards)``, as
    :class:`datamodules.datasets.TransformedSubset` seeds it, so a resumed run sees the same augmentations."""

    transform_image: Callable[[bytes], Any] | None = None
    labels: torch.Tensor | None = None
    augmentation_seed: int = 0

    def __getitem__(self, index: ChunkedIndex | int) -> Any:
        try:
            item = super().__getitem__(index)
        except FileNotFoundError as err:
            raise unreadable_chunk(self, err) from err
        if self.transform_image is None or self.labels is None:
            return item
        with seeded(sample_seed(self.augmentation_seed, self.current_epoch, item["index"])):
            try:
                image = self.transform_image(item["image"])
            except DamagedDataError as err:
                raise damaged_image(self, item["index"], err) from err
        return image, int(self.labels[item["index"]])
