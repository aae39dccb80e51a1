"""data=cluttered_fmnist (datamodules/cluttered.py) on a few hundred real Fashion-MNIST images (written as IDX files
from the Debian package's, so generation takes milliseconds), and on tagged synthetic images where provenance matters.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from files import write_idx_gz
from helpers import SMOKE_TRAINING, compose_config
from hydra.utils import instantiate
from PIL import Image

from datamodules import ClutteredFashionMNISTDataModule, FashionMNISTDataModule
from datamodules.cluttered import clutter_generator, make_canvases, object_boxes
from datamodules.fashion_mnist import DEBIAN_DIR
from lightning_modules.training_task import train

SIZES = {"train": 300, "t10k": 100}
FAST = dict(num_workers=0, batch_size=16)


@pytest.fixture(scope="module")
def real_images() -> dict[str, torch.Tensor]:
    """The first training and test images of the real Fashion-MNIST (Debian package), ``(N, 28, 28)`` uint8."""
    pool, test, _ = FashionMNISTDataModule(root=DEBIAN_DIR).load_splits()
    return {"train": pool.images[: SIZES["train"], 0], "test": test.images[: SIZES["t10k"], 0]}


def write_split_files(folder: Path, images: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in SIZES:
        write_idx_gz(folder / f"{split}-images-idx3-ubyte.gz", images[split])
        write_idx_gz(folder / f"{split}-labels-idx1-ubyte.gz", labels[split])
    return folder


@pytest.fixture(scope="module")
def small_fmnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 training and 100 test images of the real Fashion-MNIST as IDX files (the datamodule's ``system_dir``)."""
    pool, test, _ = FashionMNISTDataModule(root=DEBIAN_DIR).load_splits()
    sources = {"train": pool, "t10k": test}
    images = {s: sources[s].images[:n, 0].numpy() for s, n in SIZES.items()}
    labels = {s: sources[s].labels[:n].numpy() for s, n in SIZES.items()}
    return write_split_files(tmp_path_factory.mktemp("fmnist"), images, labels)


def cluttered(root: Path, system_dir: Path, **options: object) -> ClutteredFashionMNISTDataModule:
    return ClutteredFashionMNISTDataModule(root=str(root), system_dir=str(system_dir), **{**FAST, **options})


# ---- construction ---------------------------------------------------------------------------------------------
def test_canvases_are_a_function_of_the_seed(real_images: dict[str, torch.Tensor]) -> None:
    images = real_images["train"]
    options = dict(canvas_size=60, num_fragments=8, fragment_size=12)
    first = make_canvases(images, generator=clutter_generator(0, "train"), **options)
    again = make_canvases(images, generator=clutter_generator(0, "train"), **options)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    for other in (clutter_generator(1, "train"), clutter_generator(0, "test")):
        canvases, boxes = make_canvases(images, generator=other, **options)
        assert not torch.equal(canvases, first[0]) and not torch.equal(boxes, first[1])
    assert first[0].shape == (300, 1, 60, 60) and first[0].dtype == torch.uint8 and first[1].shape == (300, 4)


def test_the_object_is_whole_inside_its_box_and_the_box_inside_the_canvas(real_images: dict[str, torch.Tensor]) -> None:
    images = real_images["test"]
    tight = object_boxes(images)
    for fragments in (0, 8):
        canvases, boxes = make_canvases(
            images, canvas_size=45, num_fragments=fragments, fragment_size=12, generator=clutter_generator(3, "test")
        )
        assert (boxes >= 0).all() and (boxes[:, 2:] <= 45).all() and (boxes[:, :2] < boxes[:, 2:]).all()
        for canvas, box, inner, image in zip(canvases[:, 0], boxes, tight, images, strict=True):
            x0, y0, x1, y1 = box.tolist()
            obj = image[inner[1] : inner[3], inner[0] : inner[2]]  # the object's own non-zero extent
            window = canvas[y0:y1, x0:x1]
            if fragments == 0:  # nothing but the object, exactly
                assert torch.equal(window, obj) and canvas.sum() == image.sum()
            else:  # max blend: every object pixel keeps at least its brightness
                assert (window >= obj).all()
    assert torch.equal(object_boxes(torch.zeros(1, 28, 28, dtype=torch.uint8)), torch.tensor([[0, 0, 28, 28]]))
    # the tight box of a mark from row 3 to 9 and column 5 to 20
    mark = torch.zeros(1, 28, 28, dtype=torch.uint8)
    mark[0, 3:10, 5:21] = 7
    assert object_boxes(mark).tolist() == [[5, 3, 21, 10]]


def test_fragments_come_from_other_images_of_the_same_split(tmp_path: Path) -> None:
    """Every image is tagged by its value: a training image i is i + 1 everywhere, a test image 200 + i."""
    n = {"train": 120, "t10k": 40}
    tag = {"train": 1, "t10k": 200}
    images = {s: np.broadcast_to((tag[s] + np.arange(n[s]))[:, None, None], (n[s], 28, 28)) for s in n}
    labels = {s: np.arange(n[s]) % 10 for s in n}
    source = write_split_files(tmp_path / "tagged", images, labels)
    dm = cluttered(tmp_path / "root", source, val_fraction=0.25, num_fragments=6, fragment_size=10, canvas_size=50)
    dm.setup()
    for split, dataset, boxes in (("train", dm.train_set.dataset, dm.pool_boxes), ("t10k", dm.test_set.dataset, None)):
        canvases = dataset.images[:, 0]
        values = set(canvases.unique().tolist()) - {0}
        assert values <= set(range(tag[split], tag[split] + n[split]))  # only this split's images
        boxes = dm.pool_boxes if split == "train" else dm.test_boxes
        for i, (canvas, box) in enumerate(zip(canvases, boxes, strict=True)):
            outside = canvas.clone()
            outside[box[1] : box[3], box[0] : box[2]] = 0
            assert (outside != tag[split] + i).all()  # no fragment of the object's own image
            assert (outside > 0).sum() > 0  # clutter outside the object (6 fragments of 10x10 on 50x50)
    assert len(dm.boxes("val")) == 30 and len(dm.boxes("train")) == 90 and len(dm.boxes("test")) == 40


# ---- the datamodule ---------------------------------------------------------------------------------------------
def test_cache_is_written_once_reused_and_keyed_by_the_options(
    small_fmnist: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="datamodules.cluttered"):
        first = cluttered(tmp_path, small_fmnist)
        first.setup()
        (path,) = (tmp_path / "cluttered_fmnist").glob("*.pt")
        assert path.name.startswith("canvas60_fragments8x12_seed0_v1_")
        stat = path.stat()
        second = cluttered(tmp_path, small_fmnist)
        second.setup()
    assert caplog.text.count("generated 300 + 100 cluttered canvases of 60x60") == 1
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    assert path.stat().st_mode & 0o644 == 0o644  # readable by the data root's other users
    for a, b in (
        (first.train_set.dataset, second.train_set.dataset),
        (first.test_set.dataset, second.test_set.dataset),
    ):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(first.boxes("test"), second.boxes("test")) and torch.equal(first.pool_boxes, second.pool_boxes)
    other = cluttered(tmp_path, small_fmnist, clutter_seed=1)
    other.setup()
    assert len(list((tmp_path / "cluttered_fmnist").glob("*.pt"))) == 2
    assert not torch.equal(other.test_set.dataset.images, first.test_set.dataset.images)
    assert not list((tmp_path / "cluttered_fmnist").glob("*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "foreign file"])
def test_a_damaged_cache_is_generated_again(
    damage: str, small_fmnist: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reference = cluttered(tmp_path, small_fmnist)
    reference.setup()
    (path,) = (tmp_path / "cluttered_fmnist").glob("*.pt")
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped byte":  # inside the training canvases, the largest record
        data[len(data) // 3] ^= 0xFF
    else:
        buffer = io.BytesIO()
        torch.save({"generation": "other", "train": torch.zeros(2)}, buffer)
        data = bytearray(buffer.getvalue())
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.INFO, logger="datamodules.cluttered"):
        again = cluttered(tmp_path, small_fmnist)
        again.setup()
    assert f"cluttered-canvas cache {path} is not usable" in caplog.text and "generating it again" in caplog.text
    assert torch.equal(again.train_set.dataset.images, reference.train_set.dataset.images)
    assert torch.equal(again.pool_boxes, reference.pool_boxes)
    with caplog.at_level(logging.INFO, logger="datamodules.cluttered"):
        caplog.clear()
        cluttered(tmp_path, small_fmnist).setup()  # the regenerated cache is good
    assert "not usable" not in caplog.text and "generated" not in caplog.text


def test_an_unwritable_root_generates_in_memory(
    small_fmnist: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("the cache folder cannot be made under a file, whoever runs the tests")
    with caplog.at_level(logging.WARNING, logger="datamodules.cluttered"):
        dm = cluttered(blocker / "root", small_fmnist)
        dm.setup()
    assert "generating them in memory" in caplog.text and len(dm.train_set) == 270


def test_splits_boxes_label_noise_and_subsets(small_fmnist: Path, tmp_path: Path) -> None:
    clean = cluttered(tmp_path, small_fmnist, val_fraction=0.2)
    clean.setup()
    noisy = cluttered(tmp_path, small_fmnist, val_fraction=0.2, label_noise=0.5, max_train_samples=100)
    noisy.setup()
    noisy_limited = cluttered(tmp_path, small_fmnist, val_fraction=0.2, max_train_samples=100, max_eval_samples=25)
    noisy_limited.setup()
    assert (len(clean.train_set), len(clean.val_set), len(clean.test_set)) == (240, 60, 100)
    assert (len(noisy_limited.train_set), len(noisy_limited.val_set), len(noisy_limited.test_set)) == (100, 25, 25)
    # the validation split is carved from the training canvases, and the boxes follow the same indices
    train, val = set(clean.train_set.indices), set(clean.val_set.indices)
    assert not train & val and train | val == set(range(300))
    for split, subset in (("train", clean.train_set), ("val", clean.val_set)):
        assert torch.equal(clean.boxes(split), clean.pool_boxes[subset.indices])
    assert torch.equal(noisy_limited.boxes("test"), clean.test_boxes[noisy_limited.test_set.indices])
    # label noise changes training labels only, never the canvases; subsets are prefixes of the same order
    assert torch.equal(noisy.train_set.dataset.images, clean.train_set.dataset.images)
    assert set(noisy.train_set.indices) <= train and 0.3 < noisy.label_noise_realised < 0.7
    train_labels = noisy.train_set.dataset.labels[noisy.train_set.indices]
    assert (train_labels != clean.train_set.dataset.labels[noisy.train_set.indices]).any()
    assert torch.equal(noisy.val_set.dataset.labels, clean.val_set.dataset.labels)
    # normalised by the training split's statistics: the canvases are mostly black
    assert 0.05 < clean.mean[0] < 0.25 and 0.2 < clean.std[0] < 0.4
    images, labels = next(iter(clean.train_dataloader()))
    assert images.shape == (16, 1, 60, 60) and images.dtype == torch.float32 and labels.max() < 10
    with pytest.raises(ValueError, match=r"split must be one of \['train', 'val', 'test'\], got 'validation'"):
        clean.boxes("validation")
    with pytest.raises(RuntimeError, match=r"setup\(\) must run before asking for boxes"):
        cluttered(tmp_path, small_fmnist).boxes("train")


def test_gpu_resident_path_serves_the_canvases(small_fmnist: Path, tmp_path: Path) -> None:
    dm = cluttered(tmp_path, small_fmnist, gpu_resident=True)
    dm.setup()
    host = cluttered(tmp_path, small_fmnist)
    host.setup()
    images, _ = next(iter(dm.val_dataloader()))
    expected = torch.stack([host.val_set[i][0] for i in range(len(images))])
    torch.testing.assert_close(images, expected)


def test_options_are_checked(tmp_path: Path) -> None:
    common = dict(root=str(tmp_path), num_workers=0)
    with pytest.raises(ValueError, match=r"image_size=28 does not match .*canvas_size: 60.*data\.image_size=60"):
        ClutteredFashionMNISTDataModule(**common, image_size=28)
    assert ClutteredFashionMNISTDataModule(**common, image_size=None, canvas_size=40).image_size == 40
    bad = [
        ({"canvas_size": 27, "image_size": 27}, r"canvas_size must be >= 28"),
        ({"num_fragments": -1}, r"num_fragments must be >= 0"),
        ({"fragment_size": 0}, r"fragment_size must be in \[1, 28\]"),
        ({"fragment_size": 29}, r"fragment_size must be in \[1, 28\]"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=message):
            ClutteredFashionMNISTDataModule(**common, **options)
    with pytest.raises(ValueError, match="at least 2"):
        make_canvases(
            torch.zeros(1, 28, 28, dtype=torch.uint8),
            canvas_size=40,
            num_fragments=1,
            fragment_size=8,
            generator=clutter_generator(0, "train"),
        )


def test_config_composes_with_the_canvas_as_image_size(tmp_path: Path) -> None:
    cfg = compose_config("train", ["data=cluttered_fmnist", "data.canvas_size=48", "model=cnn"], tmp_path)
    dm = instantiate(cfg.data)
    assert isinstance(dm, ClutteredFashionMNISTDataModule)
    assert (dm.image_size, dm.in_chans, dm.num_classes, dm.model_family) == (48, 1, 10, "cifar")
    assert (dm.hparams.num_fragments, dm.hparams.fragment_size, dm.hparams.crop_padding, dm.hparams.flip) == (
        8,
        12,
        0,
        False,
    )
    assert cfg.module.arch == "resattn_plaincnn_cifar"


# ---- with the rest of the project -------------------------------------------------------------------------------
def test_converter_writes_the_canvases_as_shards(small_fmnist: Path, tmp_path: Path) -> None:
    litdata = pytest.importorskip(
        "litdata", reason='the converter needs the streaming extra: pip install -e ".[streaming]"'
    )
    from datamodules.shards import main

    overrides = ["data=cluttered_fmnist", f"data.root={tmp_path}", f"data.system_dir={small_fmnist}"]
    assert main([str(tmp_path / "out"), *overrides, "--workers", "1"]) == {"train": 300, "test": 100}
    dm = cluttered(tmp_path, small_fmnist)
    dm.setup()
    item = litdata.StreamingDataset(str(tmp_path / "out" / "test"))[7]
    decoded = np.asarray(Image.open(io.BytesIO(item["image"])))
    assert np.array_equal(decoded, dm.test_set.dataset.images[item["source"], 0].numpy())


@pytest.mark.parametrize("model", ["tiny", "cnn"])
def test_a_short_training_run(model: str, small_fmnist: Path, tmp_path: Path) -> None:
    overrides = [
        *SMOKE_TRAINING,
        f"model={model}",
        "data=cluttered_fmnist",
        f"data.system_dir={small_fmnist}",
        "data.batch_size=32",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "logger=csv",
    ]
    cfg = compose_config("train", overrides, tmp_path)
    metrics = train(cfg)
    assert cfg.module.arch == {"tiny": "resattn_tiny_cifar", "cnn": "resattn_plaincnn_cifar"}[model]
    assert {"train/loss", "val/acc1", "test/acc1"} <= set(metrics)
    assert list((tmp_path / "data" / "fashion_mnist" / "cluttered_fmnist").glob("*.pt"))  # cached under the root
