"""Synthetic, learnable images generated in memory from a seed: for benchmarks, tests and smoke trainings.

Each class has a fixed random low-resolution colour pattern (4x4 per channel, bilinearly upsampled); a sample is
its class pattern plus per-pixel Gaussian noise (``noise`` times the pattern's scale), stored as uint8. A model
can beat chance quickly, and the same seed gives the same bytes on every machine. No disk access.
"""

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision.transforms import v2

from datamodules.base import ImageDataModule
from datamodules.datasets import TensorImageDataset
from datamodules.gpu_resident import BatchAugmentation
from datamodules.options import DataOptions

PATTERN_GRID = 4  # side of the per-class pattern before upsampling
PIXEL_SCALE = 48.0  # uint8 units per unit of pattern or noise, around a mid-grey of 127.5
CHUNK = 256  # samples generated per step, to bound memory for large images


def make_synthetic_images(
    num_samples: int, num_classes: int, in_chans: int, image_size: int, noise: float, seed: int, stream: int
) -> TensorImageDataset:
    """``num_samples`` balanced, shuffled samples; the class patterns depend on ``seed`` only, the samples on
    ``(seed, stream)`` too, so train (stream 1) and test (stream 2) share classes but not images."""
    pattern_rng = np.random.default_rng([seed, 0])
    grid = pattern_rng.standard_normal((num_classes, in_chans, PATTERN_GRID, PATTERN_GRID), dtype=np.float32)
    patterns = F.interpolate(torch.from_numpy(grid), size=image_size, mode="bilinear", align_corners=False)
    rng = np.random.default_rng([seed, stream])
    labels = torch.from_numpy(rng.permutation(np.arange(num_samples) % num_classes))
    images = torch.empty(num_samples, in_chans, image_size, image_size, dtype=torch.uint8)
    for start in range(0, num_samples, CHUNK):
        chunk = labels[start : start + CHUNK]
        eps = torch.from_numpy(rng.standard_normal((len(chunk), in_chans, image_size, image_size), dtype=np.float32))
        values = 127.5 + PIXEL_SCALE * (patterns[chunk] + noise * eps)
        images[start : start + CHUNK] = values.round().clamp(0, 255).to(torch.uint8)
    return TensorImageDataset(images, labels)


class SyntheticDataModule(ImageDataModule):
    """Deterministic synthetic classification data (default CIFAR-like: 32x32x3, 10 classes); ``root`` is unused."""

    @dataclasses.dataclass(kw_only=True)
    class Options(DataOptions):
        root: str = ""
        num_classes: int | None = 10
        in_chans: int = 3
        image_size: int = 32
        model_family: str = "cifar"
        num_train_samples: int = 1024
        num_test_samples: int = 256
        noise: float = 1.0  # per-pixel noise relative to the class pattern
        seed: int = 0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        hp = self.hparams
        if hp.num_train_samples < 1 or hp.num_test_samples < 1 or hp.noise < 0:
            raise ValueError("num_train_samples and num_test_samples must be >= 1 and noise >= 0")
        # Mid-grey mean and roughly the generated spread: inputs come out near zero mean, unit variance.
        self.mean = (0.5,) * self.in_chans
        self.std = (PIXEL_SCALE * (1 + hp.noise**2) ** 0.5 / 255.0,) * self.in_chans

    def load_splits(self) -> tuple[Dataset, Dataset, list[str]]:
        hp = self.hparams
        spec = (self.num_classes, self.in_chans, self.image_size, hp.noise, hp.seed)
        train = make_synthetic_images(hp.num_train_samples, *spec, stream=1)
        test = make_synthetic_images(hp.num_test_samples, *spec, stream=2)
        return train, test, [f"class_{i}" for i in range(self.num_classes)]

    def train_transform(self) -> v2.Compose:
        """Scale to [0, 1] and normalise (no augmentation: the data are already random)."""
        return self.eval_transform()

    def eval_transform(self) -> v2.Compose:
        """Scale to [0, 1] and normalise."""
        return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)])

    def device_transform(self, *, train: bool) -> BatchAugmentation:
        """The batched, on-device form of the transforms (``gpu_resident=True``): scale and normalise."""
        return BatchAugmentation(mean=self.mean, std=self.std)
