"""The new data choices through Lightning: training runs of the tiny network on data=hf and data=streaming,
mid-epoch resumption that ends with the weights of an uninterrupted run (a JPEG tree, an HF dataset saved to disk,
parquet files and converter-made shards), and a 2-process DDP run whose ranks read disjoint samples."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from files import hf_dataset, write_coded_tree, write_jpeg_tree, write_parquet
from helpers import ROOT, SMOKE_TRAINING, compose_config, quiet_trainer, run_script
from lightning.pytorch.callbacks import ModelCheckpoint

from datamodules.base import ImageDataModule
from datamodules.folder import ImageFolderDataModule
from datamodules.hf import HFDataModule
from datamodules.shards import write_shards
from datamodules.streaming import StreamingDataModule
from lightning_modules import ImageClassifier
from lightning_modules.training_task import train

pytest.importorskip("datasets", reason='needs the hf extra: pip install -e ".[hf]"')
pytest.importorskip("litdata", reason='needs the streaming extra: pip install -e ".[streaming]"')

CLASSES = ["ant", "bee", "cow"]
SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same kind of small data in every format: a JPEG tree, an HF dataset saved to disk and as parquet files,
    and the converter's shards of the JPEG tree."""
    tmp = tmp_path_factory.mktemp("formats")
    write_jpeg_tree(tmp / "tree" / "train", CLASSES, per_class=12)
    write_jpeg_tree(tmp / "tree" / "test", CLASSES, per_class=2, seed=1)
    dataset = hf_dataset(CLASSES, 36, 6)
    dataset.save_to_disk(str(tmp / "saved"))
    write_parquet(dataset, tmp / "parquet")
    write_shards(ImageFolderDataModule(root=str(tmp / "tree")), tmp / "shards", verbose=False)
    return {"tree": tmp / "tree", "saved": tmp / "saved", "parquet": tmp / "parquet", "shards": tmp / "shards"}


@pytest.mark.parametrize("choice", ["hf", "streaming"])
def test_train_task_runs_on_each_new_data_choice(choice: str, sources: dict[str, Path], tmp_path: Path) -> None:
    """train.py's task: classes found in the data before any logger exists, fit, test, checkpoints. The HF run asks
    for GPU decoding, which falls back to the CPU path here."""
    data = {
        "hf": ["data=hf", f"data.path={sources['saved']}", "data.gpu_decode=true", "data.num_workers=0"],
        "streaming": ["data=streaming", f"data.input_dir={sources['shards']}", "data.num_workers=1"],
    }[choice]
    common = ["data.image_size=32", "data.batch_size=8", "data.val_fraction=0.25", "trainer.max_epochs=1", "logger=csv"]
    cfg = compose_config("train", [*SMOKE_TRAINING, *data, *common], tmp_path)
    metrics = train(cfg)
    assert cfg.data.num_classes == 3 and cfg.module.arch == "resattn_tiny"
    assert {"train/loss", "val/acc1", "test/acc1"} <= set(metrics) and metrics["test/acc5"] == 1.0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def datamodules(sources: dict[str, Path], cache: Path) -> dict[str, Callable[[], ImageDataModule]]:
    common = dict(image_size=32, batch_size=8, val_fraction=0.25, num_workers=0)
    return {
        "jpeg-tree": lambda: ImageFolderDataModule(root=str(sources["tree"]), **common),
        "hf-saved": lambda: HFDataModule(root=str(cache), path=str(sources["saved"]), **common),
        "hf-parquet": lambda: HFDataModule(root=str(cache), path=str(sources["parquet"]), **common),
        "shards": lambda: StreamingDataModule(root=str(cache), input_dir=str(sources["shards"]), **common),
    }


def fit(make: Callable[[], ImageDataModule], root: Path, ckpt_path: Path | None = None) -> dict[str, torch.Tensor]:
    """Two epochs of 3 steps from seed 0, as train.py seeds them; a checkpoint every 2 steps when not resuming."""
    L.seed_everything(0)
    if ckpt_path is not None:
        torch.manual_seed(1234)  # a new process: other initial weights and random state, replaced by the checkpoint
    saving = ckpt_path is None
    callbacks = [ModelCheckpoint(root / "ckpt", "{step}", every_n_train_steps=2, save_top_k=-1)] if saving else []
    trainer = quiet_trainer(root, max_epochs=2, limit_val_batches=0, callbacks=callbacks, enable_checkpointing=saving)
    model = ImageClassifier("resattn_tiny", num_classes=3, optimizer=SGD)
    trainer.fit(model, datamodule=make(), ckpt_path=ckpt_path)
    assert trainer.global_step == 6
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["jpeg-tree", "hf-saved", "hf-parquet", "shards"])
def test_mid_epoch_resume_ends_with_the_weights_of_an_uninterrupted_run(
    choice: str, sources: dict[str, Path], tmp_path: Path
) -> None:
    make = datamodules(sources, tmp_path / "cache")[choice]
    uninterrupted = fit(make, tmp_path)
    checkpoint = torch.load(tmp_path / "ckpt" / "step=4.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 4  # one of the second epoch's three steps done
    resumed = fit(make, tmp_path / "resumed", ckpt_path=tmp_path / "ckpt" / "step=4.ckpt")
    assert uninterrupted.keys() == resumed.keys()
    for name, value in uninterrupted.items():
        assert torch.equal(value, resumed[name]), name


@pytest.mark.slow
def test_ddp_ranks_read_disjoint_samples_of_the_shards(tmp_path: Path) -> None:
    """train.py with two gloo processes on data=streaming: each rank's batches, decoded back to image indices by
    tests/ddp_probe.py, hold their own images, every epoch."""
    write_coded_tree(tmp_path / "tree" / "train", CLASSES, per_class=16)
    write_coded_tree(tmp_path / "tree" / "test", CLASSES, per_class=2)
    write_shards(ImageFolderDataModule(root=str(tmp_path / "tree")), tmp_path / "shards", verbose=False)
    overrides = [
        *SMOKE_TRAINING,
        "data=streaming",
        f"data.input_dir={tmp_path / 'shards'}",
        "data.image_size=32",
        "data.batch_size=6",
        "data.val_fraction=0.25",
        "data.num_workers=0",
        "trainer=ddp_cpu",
        "logger=csv",
        "+callbacks.record._target_=ddp_probe.RecordSamples",
        f"+callbacks.record.out={tmp_path / 'seen'}",
    ]
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    run_script("train.py", *overrides, cwd=tmp_path, timeout=600, env={"PYTHONPATH": path})
    seen = [json.loads((tmp_path / "seen" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for epoch in ("0", "1"):
        first, second = (ranks[epoch] for ranks in seen)
        assert len(first) == len(second) == 18  # 36 training images: 3 batches of 6 per rank
        assert not set(first) & set(second) and len(set(first) | set(second)) == 36
    assert seen[0]["0"] != seen[0]["1"]  # reshuffled every epoch
