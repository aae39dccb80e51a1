"""Writers of real on-disk data formats for the tests: CIFAR pickles, IDX files, PNG/JPEG class trees."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


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
