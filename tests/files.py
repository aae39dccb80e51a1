"""Writers of real on-disk data formats for the tests: CIFAR pickles, IDX files, PNG/JPEG class trees, Hugging Face
datasets (saved to disk or as parquet files)."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

if TYPE_CHECKING:
    import datasets


def write_cifar(root: Path, *, cifar100: bool = False, n_train: int = 60, n_test: int = 20) -> np.ndarray:
    """The torchvision python-pickle layout with random images; returns the training images (N, 32, 32, 3)."""
    rng = np.random.default_rng(0)
    classes = 100 if cifar100 else 10
    train = rng.integers(0, 256, (n_train, 3 * 32 * 32), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, 3 * 32 * 32), dtype=np.uint8)
    label_key = "fine_labels" if cifar100 else "labels"

    def batch(data: np.ndarray) -> dict:
        labels = [i % classes for i in range(len(data))]
        entry = {"data": data, label_key: labels}
        if cifar100:
            entry["coarse_labels"] = [label % 20 for label in labels]
        return entry

    if cifar100:
        folder = root / "cifar-100-python"
        files = {"train": batch(train), "test": batch(test)}
        files["meta"] = {"fine_label_names": [f"fine{i}" for i in range(100)], "coarse_label_names": ["c"] * 20}
    else:
        folder = root / "cifar-10-batches-py"
        files = {f"data_batch_{i + 1}": batch(part) for i, part in enumerate(np.array_split(train, 5))}
        files["test_batch"] = batch(test)
        files["batches.meta"] = {"label_names": [f"class{i}" for i in range(10)]}
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return train.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_tree(root: Path, classes: list[str], per_class: int, seed: int = 0) -> list[Path]:
    """``root/<class>/img<i>.png`` (plus one JPEG per class)."""
    paths = []
    for c, name in enumerate(classes):
        for i in range(per_class):
            suffix = "jpg" if i == 0 else "png"
            paths.append(write_image(root / name / f"img{i}.{suffix}", seed=seed * 1000 + c * 100 + i))
    return paths


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    """IDX (big-endian header: magic 0x08 = uint8, then the dims) gzipped, as the Fashion-MNIST files are."""
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_jpeg_tree(root: Path, classes: list[str], per_class: int, seed: int = 0) -> list[Path]:
    """``root/<class>/img<i>.jpg`` of random sizes around 48x40 (JPEG only, as ImageNet)."""
    rng = np.random.default_rng(seed)
    paths = []
    for c, name in enumerate(classes):
        for i in range(per_class):
            size = (int(rng.integers(36, 60)), int(rng.integers(30, 50)))
            paths.append(write_image(root / name / f"img{i}.jpg", seed=seed * 1000 + c * 100 + i, size=size))
    return paths


def coded_pixel(index: int) -> tuple[int, int, int]:
    """The colour of image ``index`` in :func:`write_coded_tree` (any crop of it shows this colour only)."""
    return (4 * (index % 60) + 10, 4 * (index // 60) + 10, 128)


def write_coded_tree(root: Path, classes: list[str], per_class: int) -> list[Path]:
    """``root/<class>/img<i>.png``, each one colour that encodes its position in ImageFolder order (see
    :func:`coded_pixel` and :func:`read_codes`), so that a test can tell which images a batch holds."""
    paths = []
    for c, name in enumerate(classes):
        for i in range(per_class):
            path = root / name / f"img{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 16), coded_pixel(c * per_class + i)).save(path)
            paths.append(path)
    return paths


def read_codes(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> list[int]:
    """The indices of a normalised batch of :func:`write_coded_tree` images (from their top-left pixel)."""
    pixel = images[:, :2, 0, 0] * torch.tensor(std[:2]) + torch.tensor(mean[:2])
    red, green = (pixel * 255).round().long().unbind(1)
    return ((green - 10) // 4 * 60 + (red - 10) // 4).tolist()


def hf_dataset(classes: list[str], n_train: int, n_test: int, *, seed: int = 0) -> datasets.DatasetDict:
    """A ``DatasetDict`` of JPEG images (``image``) with ClassLabel ``label``s, made in memory."""
    import datasets

    rng = np.random.default_rng(seed)

    def split(n: int) -> datasets.Dataset:
        images = []
        for _ in range(n):
            pixels = rng.integers(0, 256, (int(rng.integers(30, 50)), int(rng.integers(36, 60)), 3), dtype=np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="JPEG")
            images.append({"bytes": buffer.getvalue(), "path": None})
        labels = [i % len(classes) for i in range(n)]
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    return datasets.DatasetDict({"train": split(n_train), "test": split(n_test)})


def write_parquet(dataset: datasets.DatasetDict, folder: Path) -> list[Path]:
    """Each split as ``folder/<split>-00000-of-00001.parquet`` (the Hub's file naming)."""
    paths = []
    for name, split in dataset.items():
        paths.append(folder / f"{name}-00000-of-00001.parquet")
        split.to_parquet(str(paths[-1]))
    return paths
