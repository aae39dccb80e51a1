"""Your own image files for a trained network (``eval.py predict_dir=...``, ``python -m analysis.masks --images``).

Each file is decoded as the data's images are (grayscale or RGB), its shorter side resized to the data's
``image_size`` and centre-cropped to a square, then passed through ``datamodule.eval_transform()`` exactly like the
test split (every data pipeline takes a uint8 ``(C, H, W)`` tensor).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torchvision.transforms import functional as TF

from datamodules.base import ImageDataModule
from datamodules.folder import PIL_MODES, load_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Image files among ``paths``: the files themselves, and every image under a folder (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"image path {path} does not exist")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(map(str, paths))}")
    return files


def preprocess(path: Path, datamodule: ImageDataModule) -> torch.Tensor:
    """The network input for one file; an unreadable file raises an ``OSError`` naming it."""
    image = load_image(str(path), PIL_MODES[datamodule.in_chans])
    size = datamodule.image_size
    image = TF.center_crop(TF.resize(image, size), size)
    return datamodule.eval_transform()(TF.pil_to_tensor(image))
