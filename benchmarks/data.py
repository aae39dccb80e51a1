"""Throughput of the CIFAR-10 training data path alone (no network): the datamodule's torchvision DataLoader
against its GPU-resident path (``gpu_resident=True``), both built by ``CIFAR10DataModule`` itself over the same
in-memory uint8 images, so every per-sample cost of the real loader (transforms, seeding, collation) counts."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable

import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from benchmarks.worker import ROOT, Contention
from datamodules import CIFAR10DataModule
from datamodules.base import TensorImageDataset

BATCHES_PER_REPEAT = 20


class InMemoryCIFAR10(CIFAR10DataModule):
    """CIFAR10DataModule over random uint8 images instead of the files (same splits, statistics, loaders)."""

    num_images = 4096

    def _load(self) -> tuple[Dataset, Dataset, list[str]]:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (self.num_images, 3, 32, 32), dtype=torch.uint8, generator=generator)
        pool = TensorImageDataset(images, torch.arange(self.num_images) % 10)
        return pool, pool, [f"class{i}" for i in range(10)]


def _rates(loader: Iterable, batch: int, repeats: int) -> tuple[list[float], float | None]:
    """img/s of ``repeats`` runs of ``BATCHES_PER_REPEAT`` batches, after one untimed batch (worker start-up)."""
    iterator = iter(loader)
    next(iterator)
    rates, contention = [], Contention()
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(BATCHES_PER_REPEAT):
            try:
                images, _ = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                images, _ = next(iterator)
        if images.is_cuda:
            torch.cuda.synchronize()
        rates.append(BATCHES_PER_REPEAT * batch / (time.perf_counter() - start))
    return rates, contention.others()


def data_pipelines(batch: int = 64, repeats: int = 3) -> list[dict[str, object]]:
    """One row per pipeline: name, device, img/s of every repeat, other processes' CPU share."""
    configured_workers = OmegaConf.load(ROOT / "conf" / "data" / "cifar10.yaml").num_workers
    rows = []
    for workers in dict.fromkeys((0, configured_workers)):
        dm = InMemoryCIFAR10(root="", num_classes=10, batch_size=batch, num_workers=workers, val_fraction=0.0)
        dm.setup("fit")
        with warnings.catch_warnings():  # DataLoader warns when the configured workers exceed the cores
            warnings.simplefilter("ignore", UserWarning)
            rates, contention = _rates(dm.train_dataloader(), batch, repeats)
        name = f"torchvision transforms.v2 in the datamodule's DataLoader, num_workers={workers}"
        rows.append({"pipeline": name, "device": "cpu", "img_per_s": rates, "contention": contention})
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        dm = InMemoryCIFAR10(root="", num_classes=10, batch_size=batch, val_fraction=0.0, gpu_resident=True)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.images = loader.images.to(device)  # what the Trainer's device does in _device_loader
        loader.labels = loader.labels.to(device)
        rates, contention = _rates(loader, batch, repeats)
        name = "GPU-resident: batched crop/flip on the device (data.gpu_resident=true)"
        rows.append({"pipeline": name, "device": device, "img_per_s": rates, "contention": contention})
    return rows
