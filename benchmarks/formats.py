"""Training-data throughput of the ImageNet-style path from each storage format, per CPU core: the same small JPEG
set (written here, ImageNet-like sizes) read as an ImageFolder tree with PIL (``data=folder``), as a Hugging Face
dataset saved to disk (``data=hf``) and as litdata shards made by the converter (``data=streaming``); with CUDA,
also the shards decoded and augmented on the GPU (``data.gpu_decode=true``).

Every pipeline is the datamodule's own training loader (decode, RandomResizedCrop(224), flip, normalise, collate)
with ``num_workers=0`` and one torch thread, so its img/s is what one core delivers; DataLoader workers multiply
it by the cores given to them.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.worker import Contention
from datamodules.base import ImageDataModule
from datamodules.folder import ImageFolderDataModule
from datamodules.optional import MissingExtraError

NUM_IMAGES, NUM_CLASSES = 256, 4
BATCHES_PER_REPEAT = 4
IMAGE_SIZE = 224


def write_jpeg_set(root: Path, seed: int = 0) -> dict[str, float]:
    """``root/train/<class>/*.jpg`` and a small ``root/test``: smooth random colours plus pixel noise, 400-540 x
    340-430 pixels at quality 90, so that pixel count and file size are close to ImageNet's (about 470 x 390
    pixels and 110 KiB on average); returns their mean file size and pixel count."""
    rng = np.random.default_rng(seed)
    sizes, pixels = [], []
    for split, count in (("train", NUM_IMAGES), ("test", NUM_CLASSES)):
        for i in range(count):
            width, height = int(rng.integers(400, 541)), int(rng.integers(340, 431))
            coarse = Image.fromarray(rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)).resize((width, height), 3)
            noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-36, 37, (height, width, 3))
            path = root / split / f"class{i % NUM_CLASSES}" / f"{i:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
            sizes.append(path.stat().st_size)
            pixels.append(width * height)
    return {
        "images": NUM_IMAGES,
        "mean_kib": float(np.mean(sizes)) / 1024,
        "mean_megapixels": float(np.mean(pixels)) / 1e6,
    }


def _hf_copy(tree: Path, out: Path) -> Path:
    """The tree's training and test images (their JPEG bytes) as a ``DatasetDict`` saved to disk."""
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


def _rates(dm: ImageDataModule, batch: int, repeats: int, device: torch.device) -> tuple[list[float], float]:
    """img/s of ``repeats`` runs of ``BATCHES_PER_REPEAT`` training batches of ``dm`` moved to ``device`` (where the
    GPU path decodes them) after one untimed batch, and the CPU share of other processes meanwhile."""
    loader = dm.train_dataloader()

    def batches() -> Iterator[torch.Tensor]:
        while True:
            for batch_ in loader:
                yield dm.transfer_batch_to_device(batch_, device, 0)[0]

    stream = batches()
    next(stream)
    rates, contention = [], Contention()
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(BATCHES_PER_REPEAT):
            images = next(stream)
        if images.is_cuda:
            torch.cuda.synchronize()
        rates.append(BATCHES_PER_REPEAT * batch / (time.perf_counter() - start))
    return rates, contention.others() or 0.0


def _on_gpu(dm: ImageDataModule) -> ImageDataModule:
    """``dm`` attached to a one-GPU Trainer, so that its loaders hand undecoded batches to the device."""
    import lightning as L

    dm.trainer = L.Trainer(accelerator="gpu", devices=1, logger=False, enable_progress_bar=False)
    return dm


def _pipelines(root: Path, batch: int) -> list[tuple[str, str, str, Callable[[], ImageDataModule]]]:
    """``(name, data option, device, datamodule factory)`` of every pipeline, over the set under ``root/tree``."""
    common = dict(image_size=IMAGE_SIZE, batch_size=batch, num_workers=0, val_fraction=0.0)

    def folder() -> ImageDataModule:
        return ImageFolderDataModule(root=str(root / "tree"), **common)

    def hf() -> ImageDataModule:
        from datamodules.hf import HFDataModule

        return HFDataModule(root=str(root / "hf_cache"), path=str(_hf_copy(root / "tree", root / "hf")), **common)

    def shards(gpu_decode: bool = False) -> ImageDataModule:
        from datamodules.shards import write_shards
        from datamodules.streaming import StreamingDataModule

        dm = StreamingDataModule(
            root=str(root / "cache"), input_dir=str(root / "shards"), gpu_decode=gpu_decode, **common
        )
        if not (root / "shards").is_dir():
            write_shards(folder(), root / "shards", verbose=False)
        return _on_gpu(dm) if gpu_decode else dm

    pipelines = [
        ("ImageFolder + PIL", "data=folder", "cpu", folder),
        ("Hugging Face datasets (save_to_disk) + PIL", "data=hf", "cpu", hf),
        ("litdata shards + PIL", "data=streaming", "cpu", shards),
    ]
    if torch.cuda.is_available():
        pipelines.append(("litdata shards + nvJPEG on the GPU", "data.gpu_decode=true", "cuda", lambda: shards(True)))
    return pipelines


def format_pipelines(batch: int = 64, repeats: int = 3) -> tuple[list[dict[str, object]], dict[str, float]]:
    """One row per pipeline (name, data option, device, img/s of every repeat, others' CPU share, or the extra it
    lacks) and the description of the JPEG set."""
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jpegs = write_jpeg_set(root / "tree")
        for name, option, device, make in _pipelines(root, batch):
            row: dict[str, object] = {"pipeline": name, "option": option, "device": device, "threads": 1}
            try:
                dm = make()
            except MissingExtraError as err:
                rows.append(row | {"error": f'needs the {err.extra} extra: pip install -e ".[{err.extra}]"'})
                continue
            dm.setup("fit")
            with warnings.catch_warnings():  # torchvision's decode_jpeg deprecation, litdata's notes
                warnings.simplefilter("ignore")
                rates, contention = _rates(dm, batch, repeats, torch.device(device))
            rows.append(row | {"img_per_s": ";".join(f"{r:.1f}" for r in rates), "contention": contention})
    return rows, jpegs | {"cores": float(os.cpu_count() or 1)}
