"""GPU-resident data path for datasets that fit in device memory (CIFAR-10/100, Fashion-MNIST, synthetic).

The whole uint8 split lives on the training device; every batch is gathered, normalised and augmented there
with a few batched tensor ops, so there are no DataLoader workers, no per-sample Python and no host-to-device
copies per step. Select it with ``data.gpu_resident=true``. On a CPU-only machine the device is the CPU, so the
same code runs (and is tested) anywhere.

Augmentation semantics are those of the torchvision pipelines in :mod:`datamodules.transforms`:

- ``uint8 -> float32`` as ``ToDtype(scale=True)`` does it (``x.to(float32).mul_(1 / 255)``), then either the
  mean image is subtracted (CIFAR, docs/paper.md §5.1) or ``Normalize(mean, std)`` is applied;
- ``RandomCrop(size, padding=pad, fill=0)``: offsets ``top`` and ``left`` drawn uniformly from ``0..2*pad``,
  the padded border is 0 *in the space where the torchvision pipeline pads* (after mean subtraction for CIFAR,
  i.e. the mean pixel; in raw pixels for Fashion-MNIST, i.e. black, which normalises to ``-mean / std``);
- ``RandomHorizontalFlip(p=0.5)``, drawn independently per sample.

Given the same offsets and flip decisions the output equals the torchvision pipeline's bit for bit
(``tests/test_gpu_resident.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from datamodules.resumable import EpochPosition


class BatchAugmentation:
    """Normalise (mean image or per-channel mean/std) and optionally pad-crop and flip a uint8 batch in one go.

    Args:
        mean_image: ``(C, H, W)`` image to subtract (CIFAR); exclusive with ``mean``/``std``.
        mean, std: per-channel normalisation (Fashion-MNIST, synthetic data).
        pad: zero padding on each side before the random crop back to the input size; 0 disables the crop.
        flip: random horizontal flip with probability 0.5.
        pad_before_normalize: the torchvision pipeline pads the raw image (Fashion-MNIST), so the border is a
            black pixel normalised; otherwise it pads the normalised image (CIFAR) and the border is 0.
    """

    def __init__(
        self,
        *,
        mean_image: torch.Tensor | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pad: int = 0,
        flip: bool = False,
        pad_before_normalize: bool = False,
    ) -> None:
        if (mean_image is None) == (mean is None or std is None):
            raise ValueError("give either mean_image, or both mean and std")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.mean_image = mean_image.float() if mean_image is not None else None
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) if mean is not None else None
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1) if std is not None else None
        self.pad = pad
        self.flip = flip
        self.pad_before_normalize = pad_before_normalize

    def __repr__(self) -> str:
        norm = f"mean_image={tuple(self.mean_image.shape)}" if self.mean_image is not None else "mean/std"
        return f"{type(self).__name__}({norm}, pad={self.pad}, flip={self.flip})"

    @property
    def random(self) -> bool:
        """Whether the transform draws random numbers (crop or flip)."""
        return self.pad > 0 or self.flip

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8 (N, C, H, W) -> float32``, scaled to [0, 1] and normalised exactly as the torchvision path."""
        x = images.to(torch.float32).mul_(1.0 / 255)
        if self.mean_image is not None:
            return x - self.mean_image.to(x.device)
        return x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))

    def fill_value(self, channels: int, device: torch.device) -> torch.Tensor:
        """The padded border's value per channel, in the output (normalised) space: ``(C, 1, 1)``."""
        if not self.pad_before_normalize:
            return torch.zeros(channels, 1, 1, device=device)
        return self.normalize(torch.zeros(1, channels, 1, 1, dtype=torch.uint8, device=device))[0]

    def sample(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample ``(top, left, flip)``: offsets uniform in ``0..2*pad``, flips Bernoulli(0.5)."""
        top = torch.randint(0, 2 * self.pad + 1, (n,), device=device, generator=generator)
        left = torch.randint(0, 2 * self.pad + 1, (n,), device=device, generator=generator)
        flip = torch.rand(n, device=device, generator=generator) < 0.5 if self.flip else torch.zeros(n, device=device)
        return top, left, flip.bool()

    def crop_flip(
        self, x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, fill: torch.Tensor
    ) -> torch.Tensor:
        """Crop ``x`` (``N, C, H, W``, normalised) at ``(top, left)`` of its ``pad``-padded version, then flip
        where ``flip`` is set. One ``gather`` from the unpadded batch; positions that fall in the border get
        ``fill`` (``C, 1, 1``), so no padded copy is materialised."""
        n, c, h, w = x.shape
        rows = top[:, None] - self.pad + torch.arange(h, device=x.device)  # (N, H) source rows
        steps = torch.arange(w, device=x.device)
        cols = left[:, None] - self.pad + torch.where(flip[:, None], w - 1 - steps, steps)  # (N, W) source columns
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]  # (N, H, W)
        source = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
        out = x.reshape(n, c, h * w).gather(2, source.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
        return torch.where(inside[:, None], out, fill.to(x.dtype))

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised (and, if configured, randomly cropped and flipped) float32 batch on ``images.device``."""
        x = self.normalize(images)
        if not self.random:
            return x
        top, left, flip = self.sample(len(x), x.device, generator)
        return self.crop_flip(x, top, left, flip, self.fill_value(x.shape[1], x.device))


class ShardedOrder:
    """The sample order of one rank, like ``DistributedSampler`` on a device: Lightning calls :meth:`set_epoch`.

    Shuffled orders are one permutation per epoch (seeded by ``seed`` and the epoch, identical on every rank),
    cut to a multiple of ``world_size`` and dealt round-robin, so every rank gets the same number of samples.
    Unshuffled (evaluation) orders are dealt round-robin without padding or dropping, so each sample is
    evaluated exactly once over all ranks.
    """

    def __init__(self, num_samples: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.shuffle:
            return self.num_samples // self.world_size
        return len(range(self.rank, self.num_samples, self.world_size))

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch (CPU, int64)."""
        if not self.shuffle:
            return torch.arange(self.rank, self.num_samples, self.world_size)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator)
        return order[: len(self) * self.world_size][self.rank :: self.world_size]


class DeviceBatchLoader(EpochPosition):
    """Iterable of ``(images, labels)`` batches gathered from uint8 tensors on a device and augmented there.

    Lightning accepts it as a train/val/test dataloader (any iterable with ``__len__``); its ``sampler`` has
    ``set_epoch``, which Lightning calls at every epoch, so the shuffling is reproducible and resumable by epoch.
    The random crop and flip use a generator seeded by ``(seed, epoch, rank)``: different per rank and epoch,
    identical between runs with the same seed. Like :class:`datamodules.resumable.ResumableLoader`, it is
    checkpointable mid-epoch (``state_dict``: the epoch and the batches handed out): a run resumed from a mid-epoch
    checkpoint gets the rest of that epoch's batches, augmented as they would have been (the skipped batches' random
    draws are replayed).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: BatchAugmentation,
        *,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"expected uint8 (N, C, H, W) images and N labels, got {images.dtype} {tuple(images.shape)} "
                f"and {tuple(labels.shape)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.images = images
        self.labels = labels.to(images.device, torch.long)
        self.transform = transform
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = ShardedOrder(len(images), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
        self.batch_sampler = None  # DataLoader's attribute, read by Lightning next to ``sampler``

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.sampler.indices().to(self.device)
        skip = self._start_epoch(self.sampler.epoch, len(self))
        generator = None
        if self.transform.random:
            seed = (self.sampler.seed * 1_000_003 + self.sampler.epoch) * 1_009 + self.sampler.rank
            generator = torch.Generator(self.device).manual_seed(seed)
            for _ in range(skip):  # the skipped (whole) batches' draws, so the rest is augmented as it would be
                self.transform.sample(self.batch_size, self.device, generator)
        for i in range(skip, len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            self._batches = i + 1
            yield self.transform(self.images[index], generator), self.labels[index]
