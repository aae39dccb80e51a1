"""JPEG decoding and ImageNet-style augmentation of whole batches on the training device (``data.gpu_decode=true``).

The CPU path decodes every image with PIL in a DataLoader worker, then RandomResizedCrop + flip (training) or
Resize + CenterCrop (evaluation) and normalisation (:func:`datamodules.transforms.imagenet_transform`). Here a
worker only reads the image size from the file header and draws the crop box and the flip with the *same*
torchvision transform objects, seeded the same way, so both paths see the same random numbers; the undecoded
bytes and the drawn boxes travel to the device, where :func:`decode_batch` decodes the batch with nvJPEG
(``torchvision.io.decode_jpeg(device="cuda")``, one call per batch) and applies the same ``transforms.v2``
kernels to tensors there. Non-JPEG files (PNG, a few of ImageNet's) are decoded on the CPU and moved over.

Given the same decoded pixels the result equals torchvision's pipeline applied to a tensor bit for bit; against the
PIL path it differs only by the resampling filter's rounding (PIL resizes in uint8), see tests/test_gpu_decode.py.
On a CPU device the same code runs with libjpeg-turbo, which is how it is tested without a GPU.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import NamedTuple

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from input_conventions import eval_resize

JPEG_MAGIC = b"\xff\xd8"
READ_MODES = {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}


class TrainCrop(NamedTuple):
    """An undecoded training image and its augmentation, drawn in a worker: ``box`` is ``(top, left, height,
    width, flip)``. A DataLoader batch of them is one ``TrainCrop`` of a list of bytes and an ``(N, 5)`` tensor."""

    data: bytes
    box: torch.Tensor


class EvalImage(NamedTuple):
    """An undecoded evaluation image (Resize + CenterCrop need no random numbers)."""

    data: bytes


def header_size(data: bytes) -> tuple[int, int]:
    """``(height, width)`` of an encoded image, read from its header without decoding the pixels."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return height, width


class DrawCrop:
    """The worker side of training augmentation: the crop box of ``crop`` (a ``v2.RandomResizedCrop``) and the
    flip of ``flip`` (a ``v2.RandomHorizontalFlip``), drawn in the order and with the calls ``v2.Compose`` makes,
    so that under the same seed they equal the CPU pipeline's."""

    def __init__(self, crop: v2.RandomResizedCrop, flip: v2.RandomHorizontalFlip) -> None:
        self.crop = crop
        self.flip = flip

    def __call__(self, data: bytes) -> TrainCrop:
        height, width = header_size(data)
        params = self.crop.make_params([torch.empty(0, height, width)])  # only the size is read
        flip = bool(torch.rand(1) < self.flip.p)  # RandomHorizontalFlip applies when not rand >= p
        box = torch.tensor([params["top"], params["left"], params["height"], params["width"], int(flip)])
        return TrainCrop(data, box)

    @classmethod
    def from_pipeline(cls, pipeline: v2.Compose) -> DrawCrop:
        """The draws of ``imagenet_transform(train=True)`` (its first two steps)."""
        crop, flip = pipeline.transforms[:2]
        if not isinstance(crop, v2.RandomResizedCrop) or not isinstance(flip, v2.RandomHorizontalFlip):
            raise TypeError(f"expected RandomResizedCrop then RandomHorizontalFlip, got {pipeline.transforms[:2]}")
        return cls(crop, flip)


def keep_encoded(data: bytes) -> EvalImage:
    """The worker side of evaluation: nothing to draw."""
    return EvalImage(data)


def decode_all(data: Sequence[bytes], device: torch.device, in_chans: int) -> list[torch.Tensor]:
    """uint8 ``(C, H, W)`` images on ``device``: the JPEGs in one ``decode_jpeg`` call there, the rest on the CPU."""
    mode = READ_MODES[in_chans]
    encoded = [torch.frombuffer(bytearray(item), dtype=torch.uint8) for item in data]
    jpeg = [i for i, item in enumerate(data) if item[:2] == JPEG_MAGIC]
    images: list[torch.Tensor | None] = [None] * len(data)
    if jpeg:
        for i, image in zip(jpeg, decode_jpeg([encoded[i] for i in jpeg], mode=mode, device=device), strict=True):
            images[i] = image
    for i, image in enumerate(images):
        if image is None:
            images[i] = decode_image(encoded[i], mode=mode).to(device)
    return images  # type: ignore[return-value]


def decode_batch(
    batch: TrainCrop | EvalImage,
    device: torch.device,
    *,
    image_size: int,
    in_chans: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """The float32 ``(N, C, image_size, image_size)`` batch on ``device`` that the CPU path would have produced:
    training crops resized with antialiasing and flipped as drawn; evaluation images resized to
    ``eval_resize(image_size)`` on the short side and centre-cropped; then scaled to [0, 1] and normalised."""
    images = decode_all(batch.data, device, in_chans)
    size = [image_size, image_size]
    if isinstance(batch, TrainCrop):
        out = []
        for image, (top, left, height, width, flip) in zip(images, batch.box.tolist(), strict=True):
            crop = F.resized_crop(image, top, left, height, width, size, antialias=True)
            out.append(F.horizontal_flip(crop) if flip else crop)
    else:
        resize = [eval_resize(image_size)]
        out = [F.center_crop(F.resize(image, resize, antialias=True), size) for image in images]
    pixels = F.to_dtype(torch.stack(out), torch.float32, scale=True)
    return F.normalize(pixels, list(mean), list(std))
