"""End-to-end runs of train.py / eval.py as a user runs them: real Hydra, Trainer, data files, W&B offline."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from conftest import SMOKE, SMOKE_TRAINING, compose_config, run_script
from files import write_cifar, write_tree

from lightning_modules import ImageClassifier
from lightning_modules.tasks import train
from lightning_modules.wandb_offline import read_offline_run

RUNS = Path("logs/train/runs")


def run_dir(tmp_path: Path, task: str = "train") -> Path:
    dirs = [p for p in (tmp_path / "logs" / task / "runs").iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def eval_dir(tmp_path: Path) -> Path:
    """The one evaluation directory (runs/<overrides>/<time>/)."""
    (results,) = (tmp_path / "logs" / "eval" / "runs").glob("*/*/eval_results.json")
    return results.parent


def metrics_rows(run: Path) -> list[dict[str, str]]:
    """Rows of every CSV log version of a run (a resumed run adds a version), oldest first."""
    rows = []
    for path in sorted((run / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        with path.open() as f:
            rows += list(csv.DictReader(f))
    return rows


def last_value(rows: list[dict[str, str]], key: str) -> float:
    return [float(r[key]) for r in rows if r.get(key)][-1]


@pytest.mark.slow
def test_fashion_mnist_fit_test_wandb_and_eval(tmp_path: Path) -> None:
    """The README's job at small scale: real Fashion-MNIST files, checkpoint, CSV + W&B offline, eval.py."""
    overrides = [
        "model=tiny",
        "data=fashion_mnist",
        "data.max_train_samples=1280",
        "model.zero_init_last=true",
        "data.max_eval_samples=256",
        "data.num_workers=0",
        "trainer.max_epochs=2",
        "scheduler=cosine",
        "trainer.log_every_n_steps=10",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    run_script("train.py", *overrides, cwd=tmp_path)
    run = run_dir(tmp_path)
    # Named after the overrides (too long here: cut, with a hash of the whole so distinct commands stay distinct).
    assert re.fullmatch(
        r"callbacks\.progress_bar\.refresh_rate:0\+data\.max_eval_samples:256\+.*-[0-9a-f]{10}", run.name
    )
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    model = ImageClassifier.load_from_checkpoint(run / "checkpoints" / "last.ckpt", weights_only=True)  # no Hydra
    assert model.hparams.arch == "resattn_tiny_cifar" and model.hparams.in_chans == 1
    rows = metrics_rows(run)
    assert last_value(rows, "test/acc1") > 0.2  # 40 steps; 10 classes: chance is 0.1
    assert last_value(rows, "val/acc1_best") >= last_value(rows, "val/acc1")

    # W&B offline: one finished run (syncable later) with the flat config, history and summary.
    (wandb_dir,) = (run / "wandb").glob("offline-run-*")
    wandb_run = read_offline_run(wandb_dir)
    assert wandb_run.finished
    assert wandb_run.config["module.arch"] == "resattn_tiny_cifar"
    assert wandb_run.config["data.num_classes"] == 10
    assert wandb_run.config["model/params_total"] == sum(p.numel() for p in model.parameters())
    assert wandb_run.summary["test/acc1"] == pytest.approx(last_value(rows, "test/acc1"), abs=1e-6)
    assert "ResidualAttentionNet" in wandb_run.summary["model/summary"]
    assert any("train/loss_step" in h for h in wandb_run.history)

    # Eval.py with per-class accuracy, confusion matrix and predictions.
    images = tmp_path / "my_images"
    write_tree(images, ["a"], per_class=2)
    run_script(
        "eval.py",
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "data=fashion_mnist",
        "data.max_eval_samples=200",
        "data.num_workers=0",
        f"predict_dir={images}",
        cwd=tmp_path,
    )
    out = eval_dir(tmp_path)
    results = json.loads((out / "eval_results.json").read_text())
    size = results["sizes"]["28"]
    assert 0.0 <= size["test/acc1"] <= size["test/acc5"] <= 1.0
    assert set(size["per_class_acc"]) == {
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    }
    assert (out / "confusion_matrix_28.png").read_bytes()[:4] == b"\x89PNG"
    with (out / "per_class_accuracy_28.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 10
    with (out / "predictions.csv").open() as f:
        predictions = list(csv.DictReader(f))
    assert [p["file"] for p in predictions] == ["a/img0.jpg", "a/img1.png"]
    assert all(p["top1"] in size["per_class_acc"] for p in predictions)


def test_imagefolder_tree_of_png_files(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_tree(root / "train", ["cat", "dog", "fox"], per_class=12)
    write_tree(root / "test", ["cat", "dog", "fox"], per_class=4, seed=1)
    cfg = compose_config(
        "train",
        [
            *SMOKE_TRAINING,
            "data=folder",
            f"data.root={root}",
            "data.num_classes=3",
            "data.image_size=32",
            "data.batch_size=8",
            "data.num_workers=0",
            "data.val_fraction=0.25",
            "logger=csv",
        ],
        tmp_path,
    )
    metrics = train(cfg)
    assert cfg.module.arch == "resattn_tiny"  # folder data is ImageNet-style: the ImageNet layout
    assert {"train/loss", "val/acc1", "val/acc1_best", "test/acc1", "test/acc5"} <= set(metrics)
    assert metrics["test/acc5"] == 1.0  # 3 classes
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_cifar_pipeline_on_real_format_files(tmp_path: Path) -> None:
    write_cifar(tmp_path / "data" / "cifar10", n_train=80, n_test=40)
    cfg = compose_config(
        "train",
        [
            *SMOKE_TRAINING,
            "data=cifar10",
            "data.batch_size=16",
            "data.num_workers=0",
            "data.verify_checksums=false",
            "logger=csv",
        ],
        tmp_path,
    )
    metrics = train(cfg)
    assert cfg.module.arch == "resattn_tiny_cifar"
    assert 0.0 <= metrics["test/acc1"] <= 1.0
    rows = metrics_rows(tmp_path / "run")
    assert any(r.get("train/loss") for r in rows)


def test_missing_data_says_where_and_how(tmp_path: Path) -> None:
    proc = run_script("train.py", "model=att56", "data=cifar100", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    message = proc.stderr
    assert str(tmp_path / "data" / "cifar100") in message
    assert "download=true" in message


def test_rerun_resumes_from_last_checkpoint(tmp_path: Path) -> None:
    base = [*SMOKE, "logger=csv"]
    run_script("train.py", *base, "trainer.max_epochs=1", cwd=tmp_path)
    run = run_dir(tmp_path)
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 5  # 192 * 0.9 // 32 batches per epoch
    proc = run_script("train.py", *base, "trainer.max_epochs=2", cwd=tmp_path)
    assert run_dir(tmp_path) == run  # same command (+ longer training) = same run
    assert re.search(r"Resuming from \S+/checkpoints/last\.ckpt", proc.stdout + proc.stderr)
    second = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert second["global_step"] == 10
    epochs = {int(r["epoch"]) for r in metrics_rows(run) if r.get("train/loss")}
    assert epochs == {0, 1}


@pytest.mark.slow
def test_multirun_two_jobs_each_with_its_own_wandb_run(tmp_path: Path) -> None:
    proc = run_script("train.py", "-m", *SMOKE, "trainer.max_epochs=1", "mask=mixed,spatial", cwd=tmp_path)
    jobs = sorted(p.parent.parent for p in (tmp_path / "logs" / "train" / "multiruns").glob("*/.hydra/overrides.yaml"))
    masks = [
        next(o for o in yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text()) if "mask=" in o) for j in jobs
    ]
    assert sorted(masks) == ["mask=mixed", "mask=spatial"], proc.stdout
    ids = set()
    for job in jobs:
        (wandb_dir,) = (job / "wandb").glob("offline-run-*")
        wandb_run = read_offline_run(wandb_dir)
        assert wandb_run.finished and "test/acc1" in wandb_run.summary
        assert f"mask={wandb_run.config['model.mask_type']}" in (job / ".hydra" / "overrides.yaml").read_text()
        ids.add(wandb_dir.name)
    assert len(ids) == 2


@pytest.mark.slow
def test_optuna_search_returns_the_metric(tmp_path: Path) -> None:
    proc = run_script(
        "train.py",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        *(o for o in SMOKE if not o.startswith("optimizer.lr")),  # searched
        "trainer.max_epochs=1",
        "logger=csv",
        cwd=tmp_path,
    )
    results = yaml.safe_load(
        next((tmp_path / "logs" / "train" / "multiruns").glob("optimization_results.yaml")).read_text()
    )
    assert results["name"] == "optuna"
    assert 0.0 <= results["best_value"] <= 1.0, proc.stdout
    assert set(results["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "model.mask_type"}


@pytest.mark.slow
def test_ddp_two_cpu_processes_sync_metrics(tmp_path: Path) -> None:
    """2 processes over gloo; the synced test accuracy must equal a single-process test of the same weights."""
    overrides = [*SMOKE, "data.num_test_samples=64", "trainer=ddp_cpu", "logger=csv"]
    proc = run_script("train.py", *overrides, cwd=tmp_path, timeout=600)
    run = run_dir(tmp_path)
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stderr + proc.stdout
    ddp_acc = last_value(metrics_rows(run), "test/acc1")
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    single = run_script(
        "eval.py",
        f"ckpt_path={best}",
        "data=synthetic",
        "data.image_size=16",
        "data.num_train_samples=192",
        "data.num_test_samples=64",
        "data.noise=0.5",
        cwd=tmp_path,
    )
    results = json.loads((eval_dir(tmp_path) / "eval_results.json").read_text())
    assert results["sizes"]["16"]["test/acc1"] == pytest.approx(ddp_acc, abs=1e-6), single.stdout


def test_eval_refuses_a_checkpoint_for_other_classes(tmp_path: Path) -> None:
    model = ImageClassifier("resattn_tiny_cifar", num_classes=4)
    path = tmp_path / "four.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    proc = run_script("eval.py", f"ckpt_path={path}", "data=synthetic", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert re.search(r"trained for 4 classes but the data has 10", proc.stderr)
