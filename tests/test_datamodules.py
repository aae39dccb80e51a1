"""Datamodules on real on-disk formats written into tmp_path (CIFAR pickles, IDX files, PNG/JPEG trees)."""

import contextlib
import hashlib
import logging
import tarfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from files import truncate, write_cifar, write_idx_gz, write_image, write_tree
from helpers import compose_config
from torch.utils.data import SequentialSampler
from torchvision.datasets import CIFAR10

from datamodules import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    FashionMNISTDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    ImageNetDataModule,
    SyntheticDataModule,
)
from datamodules.fashion_mnist import DEBIAN_DIR
from datamodules.resumable import EpochSampler

FAST = dict(num_workers=0, batch_size=8)


def decode_all(dm: ImageDataModule) -> None:
    for split in (dm.train_set, dm.val_set, dm.test_set):
        for i in range(len(split)):
            split[i]


# ---- CIFAR ----------------------------------------------------------------------------------------------------
def cifar10(root: Path, **kwargs) -> CIFAR10DataModule:
    return CIFAR10DataModule(root=str(root), num_classes=10, verify_checksums=False, **{**FAST, **kwargs})


def test_cifar10_batches_split_and_classes(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    dm = cifar10(tmp_path, val_fraction=0.2)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (48, 12, 20)
    assert dm.class_names == [f"class{i}" for i in range(10)]
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.max() < 10
    train, val = set(dm.train_set.indices), set(dm.val_set.indices)
    assert not train & val and train | val == set(range(60))

    again = cifar10(tmp_path, val_fraction=0.2)
    again.setup()
    assert again.val_set.indices == dm.val_set.indices
    other_seed = cifar10(tmp_path, val_fraction=0.2, split_seed=1)
    other_seed.setup()
    assert other_seed.val_set.indices != dm.val_set.indices


def test_cifar_mean_image_subtraction(tmp_path: Path) -> None:
    """docs/paper.md §5.1: the per-pixel mean of the training split is subtracted; no std division."""
    raw = write_cifar(tmp_path)
    dm = cifar10(tmp_path)
    dm.setup()
    expected = raw[dm.train_set.indices].mean(0).transpose(2, 0, 1) / 255.0
    assert dm.mean_image.shape == (3, 32, 32)
    torch.testing.assert_close(dm.mean_image, torch.from_numpy(expected).float())
    assert dm.std == (1.0, 1.0, 1.0) and dm.mean == pytest.approx(tuple(expected.mean((1, 2))))
    eval_transform = dm.eval_transform()
    processed = torch.stack([eval_transform(dm.train_set.dataset[i][0]) for i in dm.train_set.indices])
    assert processed.mean(0).abs().max() < 1e-5
    assert processed.std() > 0.2  # scale kept: values are in [-1, 1] units, not divided by a std


def test_cifar_pad_crop_flip(tmp_path: Path) -> None:
    """Zero-pad 4 + random 32x32 crop + flip: each output is a window of the zero-padded mean-subtracted image
    (or its mirror), and some windows show the zero border."""
    write_cifar(tmp_path)
    dm = cifar10(tmp_path)
    dm.setup()
    plain = dm.eval_transform()(dm.train_set.dataset[dm.train_set.indices[0]][0])
    padded = torch.nn.functional.pad(plain, (4, 4, 4, 4))
    windows = [padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
    zero_borders, flips = 0, 0
    for seed in range(20):
        torch.manual_seed(seed)
        image, _ = dm.train_set[0]
        assert image.shape == (3, 32, 32)
        as_is = any(torch.equal(image, window) for window in windows)
        mirrored = any(torch.equal(image.flip(-1), window) for window in windows)
        assert as_is or mirrored
        flips += mirrored and not as_is
        zero_rows, zero_cols = (image == 0).all(dim=(0, 2)), (image == 0).all(dim=(0, 1))
        zero_borders += bool(zero_rows[[0, -1]].any() or zero_cols[[0, -1]].any())
    assert zero_borders > 0 and flips > 0


def test_cifar100_and_num_classes_mismatch(tmp_path: Path) -> None:
    write_cifar(tmp_path, cifar100=True)
    dm = CIFAR100DataModule(root=str(tmp_path), num_classes=100, verify_checksums=False, **FAST)
    dm.setup()
    assert len(dm.class_names) == 100 and dm.class_names[3] == "fine3"
    _, labels = next(iter(dm.train_dataloader()))
    assert labels.max() < 100
    with pytest.raises(ValueError, match=r"num_classes=10 .*100.*data\.num_classes=100"):
        CIFAR100DataModule(root=str(tmp_path), num_classes=10)
    with pytest.raises(ValueError, match=r"in_chans=1 .*data\.in_chans=3"):
        CIFAR10DataModule(root=str(tmp_path), num_classes=10, in_chans=1)


def test_cifar_checksums_missing_files_and_format(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with pytest.raises(RuntimeError, match=r"md5 mismatch.*data_batch_1.*verify_checksums=false"):
        CIFAR10DataModule(root=str(tmp_path), num_classes=10, **FAST).setup()

    (folder / "data_batch_1").write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="not in the CIFAR-10 python-pickle format"):
        cifar10(tmp_path).setup()

    (folder / "test_batch").unlink()
    with pytest.raises(FileNotFoundError) as err:
        cifar10(tmp_path).setup()
    assert str(folder) in str(err.value) and "test_batch" in str(err.value)

    empty = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        cifar10(empty).setup()
    message = str(err.value)
    assert str(empty / "cifar-10-batches-py") in message
    assert "data.download=true" in message and "https://www.cs.toronto.edu/~kriz/cifar.html" in message


def serve_cifar10_archive(folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ThreadingHTTPServer, list[str]]:
    """CIFAR-10's official archive, written from random images, served over HTTP on localhost; torchvision's
    URL and checksums point at it. Returns the server and the list of its GET requests (each answered slowly, so
    that downloads overlap)."""
    write_cifar(folder / "content")
    batches = folder / "content" / "cifar-10-batches-py"
    www = folder / "www"
    www.mkdir()
    with tarfile.open(www / CIFAR10.filename, "w:gz") as archive:
        archive.add(batches, arcname=batches.name)

    def md5(path: Path) -> str:
        return hashlib.md5(path.read_bytes()).hexdigest()

    requests: list[str] = []

    class SlowHandler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(www), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            time.sleep(0.5)
            with contextlib.suppress(ConnectionError):  # torchvision's redirect probe (a GET) hangs up early
                super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(CIFAR10, "url", f"http://127.0.0.1:{server.server_port}/{CIFAR10.filename}")
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5(www / CIFAR10.filename))
    for attribute in ("train_list", "test_list"):
        names = [name for name, _ in getattr(CIFAR10, attribute)]
        monkeypatch.setattr(CIFAR10, attribute, [[name, md5(batches / name)] for name in names])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(batches / CIFAR10.meta["filename"])})
    return server, requests


def test_jobs_sharing_a_data_root_download_cifar_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server, requests = serve_cifar10_archive(tmp_path, monkeypatch)
    cifar10(tmp_path / "alone", download=True).prepare_data()
    one_download = list(requests)  # what a job alone asks for (torchvision probes for redirects first)
    requests.clear()
    root = tmp_path / "data"
    jobs = [cifar10(root, download=True) for _ in range(2)]  # two jobs of a sweep starting at once
    start = threading.Barrier(len(jobs))
    failures: list[BaseException] = []

    def prepare(job: CIFAR10DataModule) -> None:
        start.wait()
        try:
            job.prepare_data()
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=prepare, args=(job,)) for job in jobs]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        server.shutdown()
    assert not failures
    assert one_download and requests == one_download  # one download; the other job waited and found the files
    for job in jobs:
        job.setup("fit")
        assert len(job.train_set) + len(job.val_set) == 60 and len(job.test_set) == 20
    cifar10(root, download=True).prepare_data()
    assert requests == one_download  # present: nothing fetched


# ---- image folders and ImageNet -------------------------------------------------------------------------------
def folder_dm(root: Path, **kwargs) -> ImageFolderDataModule:
    args = dict(root=str(root), num_classes=3, image_size=32, **FAST)
    return ImageFolderDataModule(**{**args, **kwargs})


def test_folder_train_test_layout(tmp_path: Path) -> None:
    write_tree(tmp_path / "train", ["a", "b", "c"], per_class=6)
    write_tree(tmp_path / "test", ["a", "b", "c"], per_class=2, seed=1)
    dm = folder_dm(tmp_path, val_fraction=0.25, batch_size=4, eval_batch_size=8)
    dm.setup()
    assert dm.class_names == ["a", "b", "c"]
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (14, 4, 6)  # round(18 * 0.25) = 4
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    test_images, _ = next(iter(dm.test_dataloader()))
    assert test_images.shape == (6, 3, 32, 32)
    assert dm.mean == (0.485, 0.456, 0.406)

    gray = folder_dm(tmp_path, in_chans=1, image_size=24)
    gray.setup()
    assert gray.train_set[0][0].shape == (1, 24, 24)

    with pytest.raises(ValueError) as err:
        folder_dm(tmp_path, num_classes=10).setup()
    message = str(err.value)
    assert "num_classes=10" in message and "class directories in" in message and "data.num_classes=3" in message

    write_tree(tmp_path / "test", ["d"], per_class=1)
    with pytest.raises(ValueError, match=r"differ from those of .*only in test: \['d'\]"):
        folder_dm(tmp_path).setup()


def test_folder_flat_tree_is_split_three_ways(tmp_path: Path) -> None:
    write_tree(tmp_path, ["cat", "dog"], per_class=10)
    dm = folder_dm(tmp_path, num_classes=2, val_fraction=0.2, test_fraction=0.25)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (12, 3, 5)
    pool, test = dm.train_set.dataset, dm.test_set.dataset
    train_files = {pool.indices[i] for i in dm.train_set.indices}
    val_files = {pool.indices[i] for i in dm.val_set.indices}
    test_files = {test.indices[i] for i in dm.test_set.indices}
    assert not (train_files & val_files or train_files & test_files or val_files & test_files)
    assert train_files | val_files | test_files == set(range(20))


def test_folder_corrupt_image_error_and_skip(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = write_tree(tmp_path / "train", ["a", "b"], per_class=5)
    truncated = truncate(paths[3])
    garbage = tmp_path / "train" / "b" / "garbage.png"
    garbage.write_bytes(b"not an image at all")

    dm = folder_dm(tmp_path, num_classes=2)
    dm.setup()
    with pytest.raises(OSError, match=r"cannot decode image file .*skip_corrupt=true") as err:
        decode_all(dm)
    assert str(truncated) in str(err.value) or str(garbage) in str(err.value)

    skipping = folder_dm(tmp_path, num_classes=2, skip_corrupt=True)
    with caplog.at_level(logging.WARNING, logger="datamodules.folder"):
        skipping.setup()
    assert sorted(skipping.skipped_files) == sorted([str(truncated), str(garbage)])
    assert "skipped 2 unreadable image(s)" in caplog.text
    assert len(skipping.train_set) + len(skipping.val_set) + len(skipping.test_set) == 9
    decode_all(skipping)


def test_folder_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError) as err:
        folder_dm(missing).setup()
    assert str(missing) in str(err.value) and "data.root=" in str(err.value)
    with pytest.raises(ValueError, match=r"data\.root="):
        folder_dm("")


def test_imagenet_layout(tmp_path: Path) -> None:
    write_tree(tmp_path / "train", ["n01440764", "n01443537"], per_class=4)
    dm = ImageNetDataModule(root=str(tmp_path), num_classes=2, image_size=32, val_fraction=0.25, **FAST)
    with pytest.raises(FileNotFoundError) as err:
        dm.setup()
    assert str(tmp_path / "val") in str(err.value) and "https://image-net.org" in str(err.value)

    write_image(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", seed=7)
    with pytest.raises(FileNotFoundError, match="no class folders"):
        dm.setup()

    write_tree(tmp_path / "val", ["n01440764", "n01443537"], per_class=1, seed=3)
    dm.setup()
    assert dm.class_names == ["n01440764", "n01443537"]
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (6, 2, 2)
    images, _ = next(iter(dm.val_dataloader()))
    assert images.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"num_classes=1000 .*data\.num_classes=2"):
        ImageNetDataModule(root=str(tmp_path), image_size=32, **FAST).setup()


# ---- Fashion-MNIST --------------------------------------------------------------------------------------------
def test_fashion_mnist_from_debian_package(tmp_path: Path) -> None:
    """The Debian package dataset-fashion-mnist is installed on dev machines and in CI."""
    dm = FashionMNISTDataModule(root=str(tmp_path), max_train_samples=128, max_eval_samples=32, **FAST)
    assert dm.find_files()[("train", "images")].parent == Path(DEBIAN_DIR)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (128, 32, 32)
    assert dm.class_names[0] == "T-shirt/top" and len(dm.class_names) == 10
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 28, 28) and images.dtype == torch.float32 and labels.max() < 10
    assert 0.2 < dm.mean[0] < 0.4 and 0.25 < dm.std[0] < 0.45


def test_fashion_mnist_root_first_and_missing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 10)):
        write_idx_gz(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx_gz(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    dm = FashionMNISTDataModule(root=str(tmp_path), val_fraction=0.25, **FAST)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 10)

    empty, nowhere = tmp_path / "empty", tmp_path / "no_system_dir"
    with pytest.raises(FileNotFoundError) as err:
        FashionMNISTDataModule(root=str(empty), system_dir=str(nowhere), **FAST).setup()
    message = str(err.value)
    assert str(empty) in message and str(nowhere) in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.download=true" in message


# ---- synthetic ------------------------------------------------------------------------------------------------
def test_synthetic_is_deterministic_and_learnable() -> None:
    first, second, other = (SyntheticDataModule(seed=s, **FAST) for s in (0, 0, 1))
    for dm in (first, second, other):
        dm.setup()
    images = first.train_set.dataset.images
    assert images.shape == (1024, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images, second.train_set.dataset.images)
    assert not torch.equal(images, other.train_set.dataset.images)
    # Nearest class mean, fitted on train and scored on test, is far above chance (0.1).
    train_x, train_y = first.train_set.dataset.images.float().flatten(1), first.train_set.dataset.labels
    test_x, test_y = first.test_set.dataset.images.float().flatten(1), first.test_set.dataset.labels
    centroids = torch.stack([train_x[train_y == c].mean(0) for c in range(10)])
    accuracy = (torch.cdist(test_x, centroids).argmin(1) == test_y).float().mean()
    assert accuracy > 0.5
    batch, _ = next(iter(first.train_dataloader()))
    assert batch.shape == (8, 3, 32, 32) and abs(batch.mean()) < 0.5


# ---- shared behaviour -----------------------------------------------------------------------------------------
def test_dataloader_settings_and_subsets() -> None:
    dm = SyntheticDataModule(
        num_workers=2, persistent_workers=True, eval_batch_size=16, max_train_samples=100, max_eval_samples=20
    )
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (100, 20, 20)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    assert isinstance(train.sampler, EpochSampler) and train.drop_last and train.batch_size == 64
    assert isinstance(val.sampler, SequentialSampler) and not val.drop_last and val.batch_size == 16
    assert train.num_workers == 2 and train.persistent_workers and train.pin_memory == torch.cuda.is_available()
    serial = SyntheticDataModule(num_workers=0, pin_memory=False, max_train_samples=10, batch_size=8)
    serial.setup()
    assert not serial.test_dataloader().persistent_workers and not serial.test_dataloader().pin_memory
    too_big = SyntheticDataModule(max_train_samples=10, batch_size=64)
    too_big.setup()
    with pytest.raises(ValueError, match="fewer than batch_size=64"):
        too_big.train_dataloader()


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="model_family"):
        SyntheticDataModule(model_family="resnet")
    with pytest.raises(ValueError, match="val_fraction"):
        SyntheticDataModule(val_fraction=1.0)
    with pytest.raises(RuntimeError, match=r"setup\(\)"):
        SyntheticDataModule().train_dataloader()
    no_val = SyntheticDataModule(val_fraction=0.0)
    no_val.setup()
    assert len(no_val.val_set) == 0 and len(no_val.train_set) == 1024


@pytest.mark.parametrize(
    "name", ["cifar10", "cifar100", "imagenet", "fashion_mnist", "cluttered_fmnist", "folder", "synthetic"]
)
def test_yaml_instantiates_with_plain_hparams(name: str, tmp_path: Path) -> None:
    folder = [f"data.root={tmp_path / 'images'}", "data.num_classes=5"] if name == "folder" else []
    cfg = compose_config("train", [f"data={name}", *folder], tmp_path)
    assert {"num_classes", "in_chans", "image_size", "model_family", "batch_size"} <= set(cfg.data)
    dm = hydra.utils.instantiate(cfg.data)
    assert dm.root.startswith(str(tmp_path))
    for key in ("num_classes", "in_chans", "image_size", "model_family"):
        assert getattr(dm, key) == cfg.data[key]
    assert len(dm.mean) == len(dm.std) == dm.in_chans
    accepted = type(dm).option_names()
    assert set(dm.hparams) | {"num_classes"} == accepted == set(cfg.data) - {"_target_"}  # the module logs it
    assert all(isinstance(value, (str, int, float, bool, type(None))) for value in dm.hparams.values())
    assert type(dm)(**dm.hparams, num_classes=dm.num_classes).hparams == dm.hparams


@pytest.mark.parametrize(
    "cls", [CIFAR10DataModule, CIFAR100DataModule, FashionMNISTDataModule, ImageNetDataModule, SyntheticDataModule]
)
def test_subclasses_add_options_to_the_shared_ones(cls: type[ImageDataModule]) -> None:
    shared = ImageDataModule.option_names()
    assert "gpu_resident" in shared and shared < cls.option_names()
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['batchsize'\]; accepted: .*'batch_size'"):
        cls(root="", batchsize=8)


def test_missing_options_and_refused_gpu_resident(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"ImageFolderDataModule: missing option\(s\) \['root'\]"):
        ImageFolderDataModule(num_classes=3)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['colour'\]; missing option\(s\) \['root'\]"):
        ImageNetDataModule(colour=True)
    with pytest.raises(ValueError, match=r"ImageNetDataModule has no GPU-resident data path.*gpu_resident=false"):
        ImageNetDataModule(root=str(tmp_path), gpu_resident=True)
    assert CIFAR100DataModule(root=str(tmp_path)).num_classes == 100  # the fixed value is the default


def test_fashion_mnist_crop_and_flip_are_options(tmp_path: Path) -> None:
    """crop_padding=0 and flip=false leave training images as evaluation sees them, on both data paths."""
    common = {"root": str(tmp_path), "system_dir": str(tmp_path / "none"), "num_workers": 0}
    plain = FashionMNISTDataModule(**common, crop_padding=0, flip=False)
    image = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    torch.testing.assert_close(plain.train_transform()(image), plain.eval_transform()(image))
    batch = image.unsqueeze(0)
    device = plain.device_transform(train=True)
    assert not device.random
    torch.testing.assert_close(device(batch)[0], plain.eval_transform()(image))
    assert FashionMNISTDataModule(**common).device_transform(train=True).pad == 4
    with pytest.raises(ValueError, match="crop_padding must be >= 0"):
        FashionMNISTDataModule(**common, crop_padding=-1)
