"""The device decoding path (data.gpu_decode) on the CPU: the same random crops and flips as the PIL path, the
same pixels up to the resampler's rounding, and the fallback to the PIL path where training runs on a CPU."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import quiet_trainer
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.io import decode_image

from datamodules.encoded import DecodePIL, EncodedImageDataModule
from datamodules.gpu_decode import DrawCrop, EvalImage, TrainCrop, decode_batch, header_size, keep_encoded
from datamodules.options import DataOptions
from datamodules.resumable import seeded
from datamodules.transforms import imagenet_transform
from input_conventions import IMAGENET_MEAN, IMAGENET_STD
from lightning_modules import ImageClassifier

CPU = torch.device("cpu")
LEVEL = 1 / 255 / min(IMAGENET_STD)  # one uint8 level, in normalised units (at most)


def encoded_images(count: int, seed: int = 0) -> list[bytes]:
    """Smooth RGB images of different sizes (JPEG, the last one PNG), as real photos are smooth."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        height, width = 40 + 7 * i, 56 + 5 * i
        ramp = np.linspace(0, 200, height * width).reshape(height, width)
        pixels = np.stack([ramp, np.roll(ramp, 9, axis=1), 200 - ramp], -1) + rng.integers(0, 40, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG" if i == count - 1 else "JPEG")
        images.append(buffer.getvalue())
    return images


def normalised(images: torch.Tensor, **kw: object) -> torch.Tensor:
    return decode_batch(images, CPU, image_size=32, in_chans=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, **kw)


def test_device_path_draws_what_the_cpu_path_draws_and_gives_the_same_pixels() -> None:
    data = encoded_images(5)
    assert data[0][:2] == b"\xff\xd8" and data[-1][:4] == b"\x89PNG"
    assert header_size(data[1]) == (47, 61)
    train = imagenet_transform(32, IMAGENET_MEAN, IMAGENET_STD, train=True)
    draw = DrawCrop.from_pipeline(train)
    on_cpu, on_tensors, drawn = [], [], []
    for i, item in enumerate(data):
        with seeded(100 + i):
            on_cpu.append(train(DecodePIL("RGB")(item)))
        with seeded(100 + i):
            on_tensors.append(train(decode_image(torch.frombuffer(bytearray(item), dtype=torch.uint8))))
        with seeded(100 + i):
            drawn.append(draw(item))
    batch = default_collate(drawn)
    assert isinstance(batch, TrainCrop) and batch.box.shape == (5, 5) and len(batch.data) == 5
    assert set(batch.box[:, 4].tolist()) == {0, 1}  # some flipped, some not
    device = normalised(batch)
    assert device.shape == (5, 3, 32, 32) and device.dtype == torch.float32
    torch.testing.assert_close(device, torch.stack(on_tensors), rtol=0, atol=0)  # torchvision's kernels on tensors
    assert (device - torch.stack(on_cpu)).abs().max() <= 1.01 * LEVEL  # PIL resamples in uint8

    evaluate = imagenet_transform(32, IMAGENET_MEAN, IMAGENET_STD, train=False)
    batch = default_collate([keep_encoded(item) for item in data])
    assert isinstance(batch, EvalImage)
    expected = torch.stack([evaluate(DecodePIL("RGB")(item)) for item in data])
    assert (normalised(batch) - expected).abs().max() <= 1.01 * LEVEL

    gray = decode_batch(batch, CPU, image_size=24, in_chans=1, mean=(0.45,), std=(0.226,))
    expected = torch.stack([imagenet_transform(24, (0.45,), (0.226,), train=False)(DecodePIL("L")(d)) for d in data])
    assert gray.shape == (5, 1, 24, 24) and (gray - expected).abs().max() < 5 / 255 / 0.226  # luma rounding
    with pytest.raises(TypeError, match="RandomResizedCrop then RandomHorizontalFlip"):
        DrawCrop.from_pipeline(evaluate)


class EncodedMemory(EncodedImageDataModule):
    """The encoded-image datamodule over in-memory PNG/JPEG bytes (no optional dependency needed)."""

    def load_splits(self) -> tuple[Dataset, Dataset, list[str]]:
        data = encoded_images(24)
        pool = EncodedPool(data, torch.arange(24) % 3)
        return pool, pool, ["a", "b", "c"]


class EncodedPool(Dataset):
    def __init__(self, data: list[bytes], labels: torch.Tensor) -> None:
        self.data, self.labels = data, labels

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[bytes, int]:
        return self.data[index], int(self.labels[index])


def memory_dm(**kw: object) -> EncodedMemory:
    dm = EncodedMemory(root="", image_size=32, batch_size=8, num_workers=0, val_fraction=0.25, **kw)
    dm.setup("fit")
    return dm


def test_loaders_of_both_paths_give_the_same_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The device path's batches, decoded by ``transfer_batch_to_device`` (on the CPU here), equal the PIL path's
    up to rounding: the ResumableLoader seeds each sample's draws the same way on both paths."""
    cpu = memory_dm(gpu_decode=True)
    expected_train, expected_val = next(iter(cpu.train_dataloader())), next(iter(cpu.val_dataloader()))
    assert cpu.decode_device == CPU  # no trainer: the CPU path

    device = memory_dm(gpu_decode=True)
    monkeypatch.setattr(EncodedMemory, "_decoding_on_device", lambda self: True)
    for loader, (images, labels) in (
        (device.train_dataloader(), expected_train),
        (device.val_dataloader(), expected_val),
    ):
        batch = next(iter(loader))
        assert isinstance(batch[0], (TrainCrop, EvalImage))
        decoded, got_labels = device.transfer_batch_to_device(batch, CPU, 0)
        assert torch.equal(got_labels, labels)
        assert decoded.shape == images.shape and (decoded - images).abs().max() <= 1.01 * LEVEL
    plain = device.transfer_batch_to_device((torch.zeros(2, 3), torch.ones(2)), CPU, 0)
    assert torch.equal(plain[0], torch.zeros(2, 3))


def test_gpu_decode_falls_back_to_the_cpu_path_on_a_cpu_trainer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dm = memory_dm(gpu_decode=True)
    dm.trainer = quiet_trainer(tmp_path)
    with caplog.at_level(logging.WARNING, logger="datamodules.encoded"):
        images, _ = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.float32 and images.shape == (8, 3, 32, 32)
    assert "data.gpu_decode=true but training runs on cpu: decoding on the CPU instead" in caplog.text
    with pytest.raises(ValueError, match="random erasing has no GPU decoding form"):
        EncodedMemory(root="", gpu_decode=True, random_erasing=0.5)
    with pytest.raises(ValueError, match="in_chans must be 1"):
        EncodedMemory(root="", in_chans=2)
    assert EncodedMemory.option_names() == DataOptions.__dataclass_fields__.keys() | {"gpu_decode"}
    with pytest.raises(OSError, match="cannot decode an image of 9 bytes"):
        DecodePIL("RGB")(b"not a jpg")


def test_lightning_hands_undecoded_batches_to_the_datamodule_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit on the device path (forced on the CPU): Lightning moves every batch through the datamodule's
    ``transfer_batch_to_device``, which decodes it, for training and validation alike."""
    monkeypatch.setattr(EncodedMemory, "_decoding_on_device", lambda self: True)
    seen: list[str] = []
    decode = EncodedMemory.transfer_batch_to_device

    def recording(self: EncodedMemory, batch: object, device: torch.device, index: int) -> object:
        seen.append(type(batch[0]).__name__)
        return decode(self, batch, device, index)

    monkeypatch.setattr(EncodedMemory, "transfer_batch_to_device", recording)
    dm = EncodedMemory(root="", image_size=32, batch_size=8, num_workers=0, val_fraction=0.25, gpu_decode=True)
    model = ImageClassifier("resattn_tiny", num_classes=3, optimizer={"name": "sgd", "lr": 0.05})
    trainer = quiet_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2 and set(seen) == {"TrainCrop", "EvalImage"}
