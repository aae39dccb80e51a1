"""The trained weights shipped with the package (resattn/weights/): they load through timm offline, like any timm
pretrained tag, and reproduce the test top-1 recorded with them (RESULTS.md's) on Fashion-MNIST's test images
(Debian's dataset-fashion-mnist): a slice read by hand and normalised by the tag's own config, and the full 10,000
through eval.py; the attention study's tag on the 10,000 cluttered test canvases through eval.py."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import hydra
import numpy as np
import pytest
import timm
import torch
from helpers import ROOT, compose_config, run_script
from PIL import Image

from datamodules.fashion_mnist import DEBIAN_DIR
from resattn import pretrained

SHIPPED_TAG = "resattn56_cifar.fmnist"
SLICE = 1000


def read_idx(name: str, header: int) -> np.ndarray:
    """An IDX file of Debian's package as raw bytes after its header (16 bytes for images, 8 for labels)."""
    return np.frombuffer(gzip.decompress((Path(DEBIAN_DIR) / f"{name}.gz").read_bytes()), np.uint8, offset=header)


@pytest.mark.slow
def test_the_wheel_ships_the_weights_and_the_table_specs(tmp_path: Path) -> None:
    """A plain (not editable) install gets the tag too: the wheel built from the project holds every file of
    resattn/weights/ and analysis/tables.yaml (package data that setuptools leaves out unless listed)."""
    project = tmp_path / "project"  # a copy, so that the build leaves nothing in the checkout
    for package in (path for path in ROOT.iterdir() if (path / "__init__.py").is_file()):
        shutil.copytree(package, project / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path, project]
    subprocess.run(build, check=True, capture_output=True)
    (wheel,) = tmp_path.glob("resattn-*.whl")
    shipped = {f"resattn/weights/{file.name}" for file in pretrained.SHIPPED.iterdir()}
    assert f"resattn/weights/{SHIPPED_TAG}.pth" in shipped
    assert shipped | {"analysis/tables.yaml"} <= set(zipfile.ZipFile(wheel).namelist())


def test_the_fashion_mnist_tag_is_shipped_and_loads_through_timm() -> None:
    weights = pretrained.find(SHIPPED_TAG)
    assert weights.file.parent == pretrained.SHIPPED
    assert SHIPPED_TAG in timm.list_pretrained("resattn*")
    net = timm.create_model(SHIPPED_TAG, pretrained=True)
    cfg = net.pretrained_cfg
    assert cfg["num_classes"] == 10 and tuple(cfg["input_size"]) == (1, 28, 28)
    assert cfg["label_names"][0] == "T-shirt/top" and len(cfg["label_names"]) == 10
    assert weights.source.startswith("python train.py -m ") and "experiment=fmnist" in weights.source
    assert weights.test_top1 is not None


def test_the_fashion_mnist_tag_classifies_a_test_slice_as_well_as_it_claims() -> None:
    """The first 1,000 test images, normalised by the mean/std timm resolves from the tag: top-1 within 2 points
    of the recorded full-test accuracy (3 standard errors of a 1,000-image estimate at 95 %), so wrong weights,
    statistics or layout fail while the slice's sampling error does not."""
    weights = pretrained.find(SHIPPED_TAG)
    net = timm.create_model(SHIPPED_TAG, pretrained=True).eval()
    config = timm.data.resolve_data_config(model=net)
    images = torch.from_numpy(read_idx("t10k-images-idx3-ubyte", 16)[: SLICE * 784].copy()).view(SLICE, 1, 28, 28)
    labels = torch.from_numpy(read_idx("t10k-labels-idx1-ubyte", 8)[:SLICE].astype(np.int64))
    mean = torch.tensor(config["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(config["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        predicted = net((images.float() / 255 - mean) / std).argmax(1)
    accuracy = (predicted == labels).float().mean().item()
    assert accuracy == pytest.approx(weights.test_top1, abs=0.02)


def test_timm_prepares_images_for_the_tag_as_its_training_did(tmp_path: Path) -> None:
    """``resolve_data_config`` + ``create_transform`` on the tag normalise as the run that trained it did: the data of
    ``experiment=fmnist``, composed and set up, has the tag's mean and std, and timm's evaluation transform of a
    test image equals the datamodule's."""
    datamodule = hydra.utils.instantiate(compose_config("train", ["experiment=fmnist"], tmp_path).data)
    datamodule.setup()
    config = timm.data.resolve_data_config(model=timm.create_model(SHIPPED_TAG, pretrained=True))
    assert config["mean"] == pytest.approx(datamodule.mean, rel=1e-6)
    assert config["std"] == pytest.approx(datamodule.std, rel=1e-6)
    timm_transform, ours = timm.data.create_transform(**config), datamodule.eval_transform()
    for image in read_idx("t10k-images-idx3-ubyte", 16)[: 8 * 784].reshape(8, 28, 28):
        torch.testing.assert_close(timm_transform(Image.fromarray(image)), ours(torch.from_numpy(image.copy())[None]))


@pytest.mark.slow
def test_the_fashion_mnist_tag_reproduces_its_test_accuracy_through_eval(tmp_path: Path) -> None:
    weights = pretrained.find(SHIPPED_TAG)
    precision = f"trainer.precision={weights.test_precision}"  # bf16 where it was measured so, emulated or not
    run_script(
        "eval.py", f"pretrained={SHIPPED_TAG}", "data=fashion_mnist", "logger=csv", precision, cwd=tmp_path, timeout=600
    )
    (written,) = (tmp_path / "logs" / "eval" / "runs").glob("*/*/eval_results.json")
    result = json.loads(written.read_text())
    assert result["precision"] == weights.test_precision == "bf16-mixed"
    # bf16 autocast on a CPU is deterministic for a fixed thread count; one image either way covers another count.
    assert result["sizes"]["28"]["test/acc1"] == pytest.approx(weights.test_top1, abs=1.01e-4)


CLUTTERED_TAG = "resattn_tiny_cifar.cluttered_fmnist"


def test_the_cluttered_tag_loads_through_timm_and_prepares_images_as_its_training_did(tmp_path: Path) -> None:
    """The attention study's tag (RESULTS.md, cluttered Fashion-MNIST): shipped, built by timm as the network it was
    trained as (1 channel, 60x60 canvases), normalised by the statistics of ``experiment=cluttered``'s training
    canvases, and described by the command that trained it."""
    weights = pretrained.find(CLUTTERED_TAG)
    assert weights.file.parent == pretrained.SHIPPED and weights.test_top1 is not None
    assert weights.source.startswith("python train.py -m ") and "experiment=cluttered" in weights.source
    net = timm.create_model(CLUTTERED_TAG, pretrained=True)
    assert net.pretrained_cfg["num_classes"] == 10 and tuple(net.pretrained_cfg["input_size"]) == (1, 60, 60)
    assert net.pretrained_cfg["label_names"][0] == "T-shirt/top"
    datamodule = hydra.utils.instantiate(compose_config("train", ["experiment=cluttered"], tmp_path).data)
    datamodule.setup()
    config = timm.data.resolve_data_config(model=net)
    assert config["mean"] == pytest.approx(datamodule.mean, rel=1e-6)
    assert config["std"] == pytest.approx(datamodule.std, rel=1e-6)


@pytest.mark.slow
def test_the_cluttered_tag_reproduces_its_test_accuracy_through_eval(tmp_path: Path) -> None:
    weights = pretrained.find(CLUTTERED_TAG)
    precision = f"trainer.precision={weights.test_precision}"
    tag, data = f"pretrained={CLUTTERED_TAG}", "data=cluttered_fmnist"
    run_script("eval.py", tag, data, "logger=csv", precision, cwd=tmp_path, timeout=900)
    (written,) = (tmp_path / "logs" / "eval" / "runs").glob("*/*/eval_results.json")
    result = json.loads(written.read_text())
    assert result["precision"] == weights.test_precision == "bf16-mixed"
    assert result["sizes"]["60"]["test/acc1"] == pytest.approx(weights.test_top1, abs=1.01e-4)
