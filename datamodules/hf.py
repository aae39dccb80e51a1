"""Hugging Face ``datasets`` image classification data (``data=hf``): from the Hub by name, or from a local copy.

Sources (exactly one):

- ``name``: a Hub dataset (``subset`` and ``revision`` optional), downloaded and prepared into ``root`` (the
  ``datasets`` cache) by ``prepare_data``, as ``datasets.load_dataset`` does;
- ``path``: a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, a folder of parquet files
  whose names give the splits (``train-00000-of-00004.parquet``, ``test-...``), or one parquet file or glob
  (the training split only).

The images of ``image_column`` (an ``Image`` feature) are read as their encoded bytes and decoded by the shared
transforms (:mod:`datamodules.encoded`); the labels of ``label_column`` are a ``ClassLabel`` (its names are the
class names), integers (named by their value) or strings (sorted). ``test_split: null`` carves ``test_fraction``
of the training split as the test set; the validation split is carved from the rest, as everywhere.
"""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from datamodules.encoded import EncodedImageDataModule
from datamodules.optional import require
from datamodules.splits import split_indices

SAVED_MARKERS = ("dataset_dict.json", "state.json")  # what save_to_disk writes at the top of its folder


class HFImages(Dataset):
    """A split of a ``datasets.Dataset`` as ``(encoded image bytes, label)`` items; ``labels`` are read up front."""

    def __init__(self, dataset: Any, image_column: str, labels: torch.Tensor) -> None:
        datasets = require("datasets", "data=hf")
        self.image_column = image_column
        self.dataset = dataset.select_columns([image_column]).cast_column(image_column, datasets.Image(decode=False))
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def encoded(self, index: int) -> bytes:
        """The image file's bytes as stored (an image kept as a path is read from its file)."""
        value = self.dataset[int(index)][self.image_column]
        return value["bytes"] if value["bytes"] is not None else Path(value["path"]).read_bytes()

    def __getitem__(self, index: int) -> tuple[bytes, int]:
        return self.encoded(index), int(self.labels[index])


def class_labels(dataset: Any, column: str, names: list[str] | None) -> tuple[torch.Tensor, list[str]]:
    """``(labels, class names)`` of ``column``: a ClassLabel's names, integers named by value, or sorted strings
    (``names``, when given, fixes the classes: the training split's for the test split)."""
    datasets = require("datasets", "data=hf")
    feature = dataset.features[column]
    values = list(dataset.with_format(None)[column])
    if isinstance(feature, datasets.ClassLabel):
        found = list(feature.names)
    elif values and isinstance(values[0], str):
        found = names or sorted(set(values))
        index = {name: i for i, name in enumerate(found)}
        if unknown := sorted(set(values) - set(index)):
            raise ValueError(f"label column {column!r} has labels the training split lacks: {unknown[:10]}")
        values = [index[value] for value in values]
    else:
        found = names or [str(i) for i in range(int(max(values, default=-1)) + 1)]
    labels = torch.as_tensor(np.asarray(values, dtype=np.int64))
    classes = names or found
    if len(labels) and int(labels.max()) >= len(classes):
        raise ValueError(f"label column {column!r} has label {int(labels.max())} but only {len(classes)} classes")
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(
            f"label column {column!r} has {int((labels < 0).sum())} unlabelled examples (label -1): this split "
            "cannot be trained or tested on; choose another one (data.train_split / data.test_split)"
        )
    return labels, classes


class HFDataModule(EncodedImageDataModule):
    """Image classification from a Hugging Face dataset, with ImageNet-style transforms (see the module doc)."""

    @dataclasses.dataclass(kw_only=True)
    class Options(EncodedImageDataModule.Options):
        name: str | None = None  # Hub dataset id, e.g. uoft-cs/cifar10 or ILSVRC/imagenet-1k
        subset: str | None = None  # the Hub dataset's configuration name, if it has several
        revision: str | None = None  # a Hub branch, tag or commit
        path: str | None = None  # local copy: a save_to_disk folder, a folder of parquet files, or a parquet file/glob
        train_split: str = "train"
        test_split: str | None = "test"  # null: carve test_fraction of the training split
        test_fraction: float = 0.1
        image_column: str = "image"
        label_column: str = "label"

        def __post_init__(self) -> None:
            super().__post_init__()
            if (self.name is None) == (self.path is None):
                raise ValueError(
                    "data=hf needs exactly one source: data.name=<Hub dataset id> or data.path=<local copy>, "
                    f"got name={self.name!r}, path={self.path!r}"
                )
            if not 0 < self.test_fraction < 1:
                raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

    def __init__(self, **options: Any) -> None:
        require("datasets", "data=hf")
        super().__init__(**options)

    @property
    def source(self) -> str:
        hp = self.hparams
        return f"the Hub dataset {hp.name}" if hp.name else f"the local dataset {hp.path}"

    def prepare_data(self) -> None:
        """Download and prepare the Hub dataset (or convert the parquet files) into ``root`` once (``datasets``
        locks its cache: processes that share ``root`` wait for the one preparing it)."""
        self._open()

    def _open(self) -> dict[str, Any]:
        """The splits (``datasets.Dataset`` by name) of the configured source."""
        datasets = require("datasets", "data=hf")
        hp = self.hparams
        if hp.name:
            try:
                loaded = datasets.load_dataset(hp.name, hp.subset, revision=hp.revision, cache_dir=self.root)
            except (OSError, ConnectionError) as err:
                raise FileNotFoundError(
                    f"could not load {self.source} ({type(err).__name__}: {err}). Without network access: on a "
                    f"machine that has it run `datasets.load_dataset({hp.name!r}).save_to_disk(DIR)`, copy DIR "
                    "here and set data.path=DIR (and data.name=null)"
                ) from err
            return dict(loaded)
        path = Path(hp.path).expanduser()
        if path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS):
            loaded = datasets.load_from_disk(str(path))
            return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {hp.train_split: loaded}
        if path.is_dir():
            return dict(datasets.load_dataset("parquet", data_dir=str(path), cache_dir=self.root))
        if not glob.glob(str(path)):
            raise FileNotFoundError(
                f"data.path={hp.path} does not exist. Expected a folder written by save_to_disk, a folder of parquet "
                "files named by split (train-*.parquet, test-*.parquet) or a parquet file or glob"
            )
        files = {hp.train_split: str(path)}
        return dict(datasets.load_dataset("parquet", data_files=files, cache_dir=self.root))

    def _split(self, splits: dict[str, Any], name: str) -> Any:
        if name not in splits:
            raise ValueError(f"{self.source} has no split {name!r}; its splits: {sorted(splits)}")
        return splits[name]

    def _check_columns(self, dataset: Any) -> None:
        datasets = require("datasets", "data=hf")
        hp = self.hparams
        for option in ("image_column", "label_column"):
            if getattr(hp, option) not in dataset.features:
                raise ValueError(
                    f"{self.source} has no column {getattr(hp, option)!r} (data.{option}); its columns: "
                    f"{dataset.column_names}"
                )
        if not isinstance(dataset.features[hp.image_column], datasets.Image):
            feature = dataset.features[hp.image_column]
            raise ValueError(f"column {hp.image_column!r} of {self.source} holds {feature}, not an Image feature")

    def load_splits(self) -> tuple[Dataset, Dataset, list[str]]:
        hp = self.hparams
        splits = self._open()
        train = self._split(splits, hp.train_split)
        self._check_columns(train)
        labels, class_names = class_labels(train, hp.label_column, None)
        pool = HFImages(train, hp.image_column, labels)
        if hp.test_split is None:
            kept, carved = split_indices(len(pool), hp.test_fraction, hp.split_seed)
            return Subset(pool, sorted(kept)), Subset(pool, sorted(carved)), class_names
        test = self._split(splits, hp.test_split)
        self._check_columns(test)
        test_labels, _ = class_labels(test, hp.label_column, class_names)
        return pool, HFImages(test, hp.image_column, test_labels), class_names
