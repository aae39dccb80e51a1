"""The data the benchmark cases read, built by the project's own datamodules so that every per-sample cost of the
real loaders (decoding, transforms, seeding, collation) counts:

- CIFAR-10's datamodule and recipe over random in-memory uint8 images (:class:`InMemoryCIFAR10`), through its
  DataLoader (``dataloader``) or its GPU-resident batched path (``device``, ``data.gpu_resident=true``);
- the ImageNet-style training path over a small JPEG set written here with ImageNet-like pixel counts and file
  sizes, read as an ImageFolder tree (``folder``), a Hugging Face dataset saved to disk (``hf``), litdata shards
  (``streaming``) or the shards decoded on the GPU (``gpu-decode``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from datamodules import CIFAR10DataModule
from datamodules.base import ImageDataModule
from datamodules.datasets import TensorImageDataset
from datamodules.folder import ImageFolderDataModule

NUM_JPEGS, NUM_CLASSES = 256, 4


class InMemoryCIFAR10(CIFAR10DataModule):
    """CIFAR10DataModule over random uint8 images instead of the files (same splits, statistics, loaders)."""

    num_images = 4096

    def load_splits(self) -> tuple[Dataset, Dataset, list[str]]:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (self.num_images, 3, 32, 32), dtype=torch.uint8, generator=generator)
        pool = TensorImageDataset(images, torch.arange(self.num_images) % 10)
        return pool, pool, [f"class{i}" for i in range(10)]


def cifar(data: str, batch: int, workers: int = 0, batches: int | None = None) -> InMemoryCIFAR10:
    """CIFAR-10's datamodule over in-memory images: ``data`` is ``dataloader`` or ``device`` (GPU-resident);
    ``batches`` sizes the epoch (so that one Lightning fit covers a run of that many steps)."""
    datamodule = InMemoryCIFAR10(
        root="", num_classes=10, batch_size=batch, num_workers=workers, val_fraction=0.0, gpu_resident=data == "device"
    )
    if batches:
        datamodule.num_images = batch * batches
    return datamodule


def batches(datamodule: ImageDataModule, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches of ``datamodule`` on ``device``, epoch after epoch, as the Trainer would hand them to
    the network (the GPU-resident path's images move to the device once, as the Trainer does in its setup)."""
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    if hasattr(loader, "images"):
        loader.images, loader.labels = loader.images.to(device), loader.labels.to(device)
    while True:
        for batch in loader:
            yield datamodule.transfer_batch_to_device(batch, device, 0)


def write_jpeg_set(root: Path, seed: int = 0) -> None:
    """``root/train/<class>/*.jpg`` and a small ``root/test``: smooth random colours plus pixel noise, 400-540 x
    340-430 pixels at quality 90, so that pixel count and file size are close to ImageNet's (about 0.18
    megapixels and 110 KiB on average)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", NUM_JPEGS), ("test", NUM_CLASSES)):
        for i in range(count):
            width, height = int(rng.integers(400, 541)), int(rng.integers(340, 431))
            coarse = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize((width, height), 3)
            noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-36, 37, (height, width, 3))
            path = root / split / f"class{i % NUM_CLASSES}" / f"{i:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def _hf_copy(tree: Path, out: Path) -> Path:
    """The tree's images (their JPEG bytes) as a ``DatasetDict`` saved to disk."""
    import datasets

    datasets.disable_progress_bars()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=NUM_CLASSES)})
    splits = {}
    for split in ("train", "test"):
        files = sorted((tree / split).glob("*/*.jpg"))
        rows = {
            "image": [{"bytes": path.read_bytes(), "path": None} for path in files],
            "label": [int(path.parent.name.removeprefix("class")) for path in files],
        }
        splits[split] = datasets.Dataset.from_dict(rows, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(out))
    return out


def image_format(data: str, root: Path, batch: int) -> ImageDataModule:
    """The training datamodule of storage format ``data`` (``folder``, ``hf``, ``streaming``, ``gpu-decode``) over
    a JPEG set written under ``root``; raises :class:`~datamodules.optional.MissingExtraError` without its extra."""
    write_jpeg_set(root / "tree")
    common: dict[str, Any] = dict(image_size=224, batch_size=batch, num_workers=0, val_fraction=0.0)
    folder = ImageFolderDataModule(root=str(root / "tree"), **common)
    if data == "folder":
        return folder
    if data == "hf":
        from datamodules.hf import HFDataModule

        return HFDataModule(root=str(root / "hf_cache"), path=str(_hf_copy(root / "tree", root / "hf")), **common)
    from datamodules.shards import write_shards
    from datamodules.streaming import StreamingDataModule

    gpu = data == "gpu-decode"
    datamodule = StreamingDataModule(root=str(root / "cache"), input_dir=str(root / "shards"), gpu_decode=gpu, **common)
    write_shards(folder, root / "shards", verbose=False)
    if gpu:  # attached to a one-GPU Trainer, its loaders hand undecoded batches to the device
        datamodule.trainer = L.Trainer(accelerator="gpu", devices=1, logger=False, enable_progress_bar=False)
    return datamodule
