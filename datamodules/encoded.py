"""The shared part of the datamodules whose items are encoded image files (JPEG/PNG bytes): Hugging Face datasets
(:mod:`datamodules.hf`) and litdata shards (:mod:`datamodules.streaming`).

Their pools yield ``(bytes, label)`` and expose ``labels`` (so label noise works as everywhere). The transforms
are the ImageFolder path's: the bytes are decoded with PIL (as ``datamodules.folder.load_image`` does) and go
through :func:`datamodules.transforms.imagenet_transform`. With ``gpu_decode=true`` and a CUDA training device the
workers only draw the random crops and the batch is decoded and augmented on the device
(:mod:`datamodules.gpu_decode`); on a CPU device ``gpu_decode`` falls back to the CPU path.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from datamodules.base import ImageDataModule
from datamodules.errors import DamagedDataError
from datamodules.folder import DECODE_ERRORS, PIL_MODES
from datamodules.gpu_decode import DrawCrop, EvalImage, TrainCrop, decode_batch, keep_encoded
from datamodules.options import DataOptions
from datamodules.transforms import imagenet_statistics, imagenet_transform

log = logging.getLogger(__name__)


class DecodePIL:
    """Encoded image bytes -> a fully decoded PIL image in ``mode``; a broken file raises a DamagedDataError (the
    dataset that holds it names it: :meth:`datamodules.datasets.TransformedSubset._transformed`)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, data: bytes) -> Image.Image:
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.convert(self.mode)
        except DECODE_ERRORS as err:
            raise DamagedDataError(
                f"cannot decode an image of {len(data)} bytes ({type(err).__name__}: {err})"
            ) from err

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


class EncodedImageDataModule(ImageDataModule):
    """Pools of ``(encoded bytes, label)`` with ImageNet-style transforms, decoded on the CPU or on the device."""

    @dataclasses.dataclass(kw_only=True)
    class Options(DataOptions):
        num_classes: int | None = None  # None: the classes of the data
        in_chans: int = 3  # 1 decodes the images as grayscale
        image_size: int = 224
        model_family: str = "imagenet"
        gpu_decode: bool = False  # decode + augment JPEG batches on the CUDA training device (CPU path elsewhere)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.in_chans not in PIL_MODES:
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {self.in_chans}")
        if self.hparams.gpu_decode and self.hparams.random_erasing > 0:
            raise ValueError(
                "random erasing has no GPU decoding form: set data.random_erasing=0 or data.gpu_decode=false"
            )
        self.mean, self.std = imagenet_statistics(self.in_chans)
        self.decode_device: torch.device | None = None  # set when the loaders decode on the device

    def train_transform(self) -> v2.Compose:
        """Decode with PIL, then RandomResizedCrop(image_size) + flip + normalise (docs/paper.md §5.3)."""
        return v2.Compose([DecodePIL(PIL_MODES[self.in_chans]), self._pipeline(train=True)])

    def eval_transform(self) -> v2.Compose:
        """Decode with PIL, then Resize(eval_resize(image_size)) + CenterCrop(image_size) + normalise."""
        return v2.Compose([DecodePIL(PIL_MODES[self.in_chans]), self._pipeline(train=False)])

    def _pipeline(self, *, train: bool) -> v2.Compose:
        return imagenet_transform(self.image_size, self.mean, self.std, train=train)

    def draw_transforms(self) -> tuple[Callable[[bytes], TrainCrop], Callable[[bytes], EvalImage]]:
        """The worker side of the device path: training crops drawn as the CPU pipeline draws them, evaluation
        images passed on undecoded."""
        return DrawCrop.from_pipeline(self._pipeline(train=True)), keep_encoded

    def _decoding_on_device(self) -> bool:
        """Whether the loaders hand undecoded batches to the device: ``gpu_decode`` and a CUDA training device."""
        if not self.hparams.gpu_decode:
            return False
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if device.type != "cuda":
            if self.decode_device is None:
                log.warning("data.gpu_decode=true but training runs on %s: decoding on the CPU instead", device)
            self.decode_device = torch.device("cpu")
            return False
        self.decode_device = device
        return True

    def _choose_decoding(self) -> None:
        """Give the splits the transforms of the decoding path in use (setup builds them for the CPU path)."""
        if self.train_set is None:
            return  # _loader raises the usual error
        if self._decoding_on_device():
            train, evaluate = self.draw_transforms()
        else:
            train, evaluate = self._augmented(), self.eval_transform()
        self.train_set.transform = train
        self.val_set.transform = self.test_set.transform = evaluate

    def train_dataloader(self) -> DataLoader:
        self._choose_decoding()
        return super().train_dataloader()

    def val_dataloader(self) -> DataLoader:
        self._choose_decoding()
        return super().val_dataloader()

    def test_dataloader(self) -> DataLoader:
        self._choose_decoding()
        return super().test_dataloader()

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Undecoded batches (``gpu_decode``) are decoded and augmented on ``device``; others move as usual."""
        if isinstance(batch, (list, tuple)) and len(batch) == 2 and isinstance(batch[0], (TrainCrop, EvalImage)):
            images, labels = batch
            options = dict(image_size=self.image_size, in_chans=self.in_chans, mean=self.mean, std=self.std)
            return decode_batch(images, device, **options), labels.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)
