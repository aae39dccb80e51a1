"""``python -m datamodules.shards OUT data=<choice> [data.<option>=...]``: any data config this project reads (an
ImageFolder tree, ImageNet, Fashion-MNIST, CIFAR, a Hugging Face dataset...) as litdata shards for ``data=streaming``.

The data config is composed as ``train.py`` composes it (same overrides) and its datamodule loads the data; the
training pool goes to ``OUT/train`` in a seeded random order (``--seed``: litdata shuffles the order of chunks and
of items within a chunk, so a chunk must not hold one class, as an ImageFolder in file order would), the test set
to ``OUT/test`` in its own order; each split is written by ``litdata.optimize``, with a progress bar. Image files
keep their bytes (a JPEG stays the same JPEG, so GPU decoding applies); in-memory images (Fashion-MNIST, CIFAR) are
stored as PNG. Each split's ``index.json`` also gets the class names and all labels (see
:mod:`datamodules.shard_format`). Upload ``OUT`` as it is to stream it from an object store.

The command prints the ``train.py`` options for the shards: the source config's image size and model family, or,
where its images are smaller than that size (a folder of 32-pixel images under ``data=folder``'s 224), their own
size and, up to 64 pixels, the CIFAR family. What litdata's processes print besides the progress bar (worker starts
and ends, an advertisement) is left out.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import statistics
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.datasets import DatasetFolder
from torchvision.io import encode_png
from torchvision.transforms.v2 import functional as F

from datamodules.base import ImageDataModule
from datamodules.cpu_cores import usable_cores
from datamodules.datasets import TensorImageDataset
from datamodules.label_noise import dataset_labels
from datamodules.optional import require
from datamodules.shard_format import SPLITS, write_metadata
from datamodules.splits import seeded_order


def encoded_item(dataset: Dataset, index: int) -> tuple[bytes, int]:
    """Item ``index`` of a datamodule's pool or test set as ``(encoded image bytes, label)``: a file's own bytes
    where the dataset reads files, a PNG of an in-memory image otherwise."""
    if isinstance(dataset, Subset):
        return encoded_item(dataset.dataset, dataset.indices[index])
    if isinstance(dataset, DatasetFolder):
        path, label = dataset.samples[index]
        return Path(path).read_bytes(), label
    if isinstance(dataset, TensorImageDataset):
        return encode_png(dataset.images[index]).numpy().tobytes(), int(dataset.labels[index])
    image, label = dataset[index]
    if isinstance(image, bytes):
        return image, int(label)
    if isinstance(image, Image.Image):
        image = F.pil_to_tensor(image)
    return encode_png(image).numpy().tobytes(), int(label)


class EncodeItem:
    """``optimize``'s function: ``(position in the shards, source index)`` -> the stored item (picklable, for
    litdata's worker processes)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __call__(self, position_and_source: tuple[int, int]) -> dict[str, Any]:
        position, source = position_and_source
        image, label = encoded_item(self.dataset, source)
        return {"index": position, "source": source, "image": image, "label": label}


@contextlib.contextmanager
def stdout_dropped() -> Iterator[None]:
    """Drop what this process and its children print to stdout in the block (litdata's writers print a dozen lines
    per split); stderr, where its progress bar goes, stays. So does its warning that an item is larger than the
    chunk size (a test's tiny chunks; never with the default 64MB)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="An item was larger than the target chunk size")
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def write_shards(
    datamodule: ImageDataModule,
    out: Path,
    *,
    chunk_bytes: str = "64MB",
    workers: int = 1,
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, int]:
    """Write the datamodule's training pool (shuffled by ``seed``) and test set as shards under ``out``; the image
    count of each split."""
    litdata = require("litdata", "python -m datamodules.shards")
    datamodule.prepare_data()
    pool, test, class_names = datamodule.load_splits()
    methods = multiprocessing.get_all_start_methods()
    counts = {}
    for split, dataset in zip(SPLITS, (pool, test), strict=True):
        if len(dataset) == 0:
            raise ValueError(f"the {split} split of {type(datamodule).__name__} is empty: nothing to write")
        order = seeded_order(len(dataset), seed) if split == "train" else list(range(len(dataset)))
        with stdout_dropped():
            litdata.optimize(
                fn=EncodeItem(dataset),
                inputs=list(enumerate(order)),
                output_dir=str(out / split),
                chunk_bytes=chunk_bytes,
                num_workers=min(workers, len(dataset)),
                mode="overwrite",
                keep_data_ordered=True,  # each worker writes a contiguous slice of the inputs: positions as given
                reorder_files=False,
                start_method="fork" if "fork" in methods else None,  # spawn re-imports torch in every worker
                verbose=verbose,
            )
        labels = dataset_labels(dataset)[order].tolist()
        write_metadata(out / split, {"class_names": list(class_names), "labels": labels})
        counts[split] = len(dataset)
    return counts


def training_options(datamodule: ImageDataModule, out: Path, model_family: str, samples: int = 32) -> str:
    """The ``data.*`` options that train on the shards in ``out`` of ``datamodule``'s data: its channels, and its
    image size and model family, unless its images are smaller than that size (the median shorter side of
    ``samples`` of the written training images): then their size and, up to 64 pixels, ``model_family=cifar``."""
    size = datamodule.image_size
    if datamodule.native_image_size(datamodule.hparams) is None:  # images that it resizes: see how large they are
        litdata = require("litdata", "python -m datamodules.shards")
        shards = litdata.StreamingDataset(str(out / "train"))
        positions = range(0, len(shards), max(1, len(shards) // samples))
        native = int(statistics.median(min(Image.open(io.BytesIO(shards[i]["image"])).size) for i in positions))
        if native < size:
            size, model_family = native, "cifar" if native <= 64 else model_family
    return f"data.in_chans={datamodule.in_chans} data.image_size={size} data.model_family={model_family}"


def compose_data(overrides: Sequence[str]) -> Any:
    """The ``data`` node of ``train.py``'s config under ``overrides``, resolved."""
    from omegaconf import OmegaConf

    from datamodules.configs import compose

    return OmegaConf.create(OmegaConf.to_container(compose(overrides).data, resolve=True))


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(
        prog="python -m datamodules.shards",
        description="Convert a data config of this project into litdata shards for data=streaming.",
        epilog="example: python -m datamodules.shards /data/shards/imagenet data=imagenet data.root=/data/imagenet",
    )
    parser.add_argument("out", type=Path, help="output folder (train/ and test/ are written into it)")
    parser.add_argument("overrides", nargs="+", help="data=<choice> and data.<option>=<value>, as for train.py")
    parser.add_argument("--chunk-bytes", default="64MB", help="target size of a chunk file (default 64MB)")
    parser.add_argument("--workers", type=int, default=usable_cores(), help="writer processes (default: usable cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training images' order in the shards")
    args = parser.parse_args(argv)
    if str(args.out).startswith(("s3:", "gs:", "azure:")):
        parser.error("write the shards to a local folder, then upload it as it is (e.g. aws s3 sync OUT s3://...)")
    from hydra.utils import instantiate

    data = compose_data(args.overrides)
    datamodule = instantiate(data)
    counts = write_shards(datamodule, args.out, chunk_bytes=args.chunk_bytes, workers=args.workers, seed=args.seed)
    options = training_options(datamodule, args.out, data.model_family)
    print(
        f"wrote {counts['train']} training and {counts['test']} test images to {args.out}. Train on them with:\n"
        f"  python train.py data=streaming data.input_dir={args.out} {options}"
    )
    return counts


if __name__ == "__main__":
    main()
