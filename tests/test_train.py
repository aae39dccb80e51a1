"""End-to-end runs of train.py / eval.py as a user runs them: real Hydra, Trainer, data files, W&B offline."""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from files import write_cifar, write_tree
from helpers import SMOKE, SMOKE_TRAINING, compose_config, run_script

from analysis.wandb_offline import read_offline_run
from lightning_modules import ImageClassifier
from lightning_modules.eval_outputs import confusion_figure
from lightning_modules.sweep_folder import sweep_name
from lightning_modules.training_task import train

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
def test_quickstart_twice_then_eval_twice(tmp_path: Path) -> None:
    """The README's main job at small scale, run twice as users do: real Fashion-MNIST files, checkpoints, CSV + W&B
    offline; the rerun reports the finished run; the evaluation command it prints runs twice."""
    overrides = [
        "experiment=quickstart",
        "data.max_train_samples=1280",
        "data.max_eval_samples=256",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=5",
        "callbacks.progress_bar.refresh_rate=0",
    ]
    first = run_script("train.py", *overrides, cwd=tmp_path)
    run = run_dir(tmp_path, "quickstart")
    # Named after the overrides (the epochs excluded: a longer run of the same command continues this one).
    assert run.name == (
        "callbacks.progress_bar.refresh_rate:0+data.max_eval_samples:256+data.max_train_samples:1280"
        "+experiment:quickstart+trainer.log_every_n_steps:5"
    )
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("best-") for n in ckpts)
    model = ImageClassifier.load_from_checkpoint(run / "checkpoints" / "last.ckpt", weights_only=True)  # no Hydra
    assert model.hparams.arch == "resattn_tiny_cifar" and model.hparams.in_chans == 1
    rows = metrics_rows(run)
    assert last_value(rows, "test/acc1") > 0.2  # 20 steps; 10 classes: chance is 0.1
    assert last_value(rows, "val/acc1_best") >= last_value(rows, "val/acc1")
    printed = first.stdout + first.stderr
    assert f"Run directory: logs/quickstart/runs/{run.name}" in printed
    assert "curves: csv/version_0/metrics.csv" in printed
    assert "💡 Tip" not in printed and "already configured with model summary" not in printed  # console.CHATTER
    log = (run / "train.log").read_text()
    assert "Seed set to 42" in log and "Evaluate it: python eval.py" in log  # the console's messages, with times

    # W&B offline: one finished run (syncable later) with the nested config, history and summary.
    (wandb_dir,) = (run / "wandb").glob("offline-run-*")
    wandb_run = read_offline_run(wandb_dir)
    assert wandb_run.finished
    assert wandb_run.config["module"]["arch"] == "resattn_tiny_cifar"
    assert wandb_run.flat_config["data.num_classes"] == 10
    assert wandb_run.config["model/params_total"] == sum(p.numel() for p in model.parameters())
    assert wandb_run.summary["test/acc1"] == pytest.approx(last_value(rows, "test/acc1"), abs=1e-6)
    assert "ResidualAttentionNet" in wandb_run.summary["model/summary"]
    assert any("train/loss_step" in h for h in wandb_run.history)

    second = run_script("train.py", *overrides, cwd=tmp_path)
    printed = second.stdout + second.stderr
    assert "This run already finished (trainer.max_epochs=2, at " in printed
    assert f"test/acc1={last_value(rows, 'test/acc1'):.4f}" in printed
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1 and len(list((run / "csv").iterdir())) == 1

    # The printed evaluation command, twice: per-class accuracy, confusion matrix and predictions, never overwritten.
    (command,) = re.findall(r"Evaluate it: python eval.py (.*)", printed)
    images = tmp_path / "my_images"
    write_tree(images, ["a"], per_class=2)
    evaluation = [*shlex.split(command), "data.max_eval_samples=200", f"predict_dir={images}"]
    best = next((run / "checkpoints").glob("best-*.ckpt")).relative_to(tmp_path)
    assert evaluation[:2] == [f"ckpt_path={best}", "data=fashion_mnist"]
    for _ in range(2):
        run_script("eval.py", *evaluation, cwd=tmp_path)
    outputs = sorted((tmp_path / "logs" / "eval" / "runs").glob("*/*/eval_results.json"))
    assert len(outputs) == 2
    out = outputs[-1].parent
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
    assert results["unreadable_images"] == []


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


@pytest.mark.slow
def test_a_row_of_a_configs_grid_trains_in_the_grids_folder(tmp_path: Path) -> None:
    """``experiment=cluttered cluttered_row=resnet`` trains the job ``experiment=cluttered`` would, where it would."""
    experiment = tmp_path / "conf" / "experiment" / "grid.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text("# @package _global_\nhydra:\n  sweeper:\n    params:\n      mask: mixed,spatial\n")
    grid_command = [*SMOKE, "trainer.max_epochs=1", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "experiment=grid"]
    run_script("train.py", "-m", *grid_command, "mask=spatial", cwd=tmp_path)
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    assert sweep.name == sweep_name([*SMOKE, "experiment=grid"], ["trainer.max_epochs"])
    (row_job,) = [p.parent.parent for p in sweep.glob("*/.hydra/overrides.yaml")]
    assert "mask=spatial" in (row_job / ".hydra" / "overrides.yaml").read_text()
    grid = run_script("train.py", "-m", *grid_command, cwd=tmp_path)  # the whole grid: trains only mask=mixed
    assert grid.stdout.count("already finished") == 1
    assert sorted(p.name for p in sweep.parent.iterdir()) == [sweep.name]
    assert len(list(sweep.glob("*/run.json"))) == 2


@pytest.mark.slow
def test_multirun_two_jobs_each_with_its_own_wandb_run(tmp_path: Path) -> None:
    proc = run_script("train.py", "-m", *SMOKE, "trainer.max_epochs=1", "mask=mixed,spatial", cwd=tmp_path)
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    exclude = ["trainer.max_epochs"]  # continues a run: not part of its name
    assert sweep.name == sweep_name([*SMOKE, "trainer.max_epochs=1", "mask=mixed,spatial"], exclude)
    assert (sweep / "multirun.yaml").is_file()
    jobs = sorted(p.parent.parent for p in sweep.glob("*/.hydra/overrides.yaml"))
    masks = [
        next(o for o in yaml.safe_load((j / ".hydra" / "overrides.yaml").read_text()) if "mask=" in o) for j in jobs
    ]
    assert sorted(masks) == ["mask=mixed", "mask=spatial"], proc.stdout
    ids = set()
    for job in jobs:
        (wandb_dir,) = (job / "wandb").glob("offline-run-*")
        wandb_run = read_offline_run(wandb_dir)
        assert wandb_run.finished and "test/acc1" in wandb_run.summary
        assert f"mask={wandb_run.flat_config['model.net.mask_type']}" in (job / ".hydra" / "overrides.yaml").read_text()
        ids.add(wandb_dir.name)
    assert len(ids) == 2


@pytest.mark.slow
def test_optuna_search_returns_the_metric(tmp_path: Path) -> None:
    search = [
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        *(o for o in SMOKE if not o.startswith("optimizer.lr")),  # searched
        "trainer.max_epochs=1",
        "logger=csv",
    ]
    proc = run_script("train.py", *search, cwd=tmp_path)
    (results_file,) = (tmp_path / "logs" / "train" / "multiruns").glob("*/optimization_results.yaml")
    results = yaml.safe_load(results_file.read_text())
    assert results["name"] == "optuna"
    assert 0.0 <= results["best_value"] <= 1.0, proc.stdout
    assert set(results["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "model.net.mask_type"}
    assert "alembic" not in proc.stdout + proc.stderr

    # The same sweep again: every trial returns its stored objective, nothing trains.
    again = run_script("train.py", *search, cwd=tmp_path)
    assert (again.stdout + again.stderr).count("This run already finished") == 2
    assert yaml.safe_load(results_file.read_text()) == results
    assert all(len(list(job.glob("csv/version_*"))) == 1 for job in results_file.parent.glob("*/"))

    # Another search (other trials) has a folder of its own: the first one's results stay.
    run_script("train.py", *search, "hydra.sweeper.n_trials=1", "seed=7", cwd=tmp_path)
    sweeps = sorted((tmp_path / "logs" / "train" / "multiruns").iterdir())
    assert len(sweeps) == 2 and all((s / "optimization_results.yaml").is_file() for s in sweeps)
    assert yaml.safe_load(results_file.read_text()) == results
    assert len(list(results_file.parent.glob("*/run.json"))) == 2


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


@pytest.mark.slow
def test_the_console_shows_what_a_user_reads(tmp_path: Path) -> None:
    """A default training (W&B offline, as a user without WANDB_SILENT runs it) and an evaluation of pretrained
    weights: progress, metrics and summaries with four decimals, one line on the model (its layer table in
    train.log), warnings named by package path; no W&B header or footer unless asked for (WANDB_QUIET=false)."""
    overrides = [*SMOKE, "trainer.max_epochs=1", "trainer.log_every_n_steps=50"]  # 5 steps: Lightning warns
    trained = run_script("train.py", *overrides, cwd=tmp_path, unset=("WANDB_SILENT",))
    printed = trained.stdout + trained.stderr
    assert not re.search(r"^wandb:", printed, re.MULTILINE) and "site-packages" not in printed
    assert "Model: 68.0 K parameters (68.0 K trainable, 0.3 MB)" in printed and "FLOPs" not in printed
    assert "(PossibleUserWarning at lightning/pytorch/loops/fit_loop.py:" in printed
    assert not re.search(r"\d\.\d{7}", printed) and re.search(r"results: test/acc1=\d\.\d{4}, ", printed)
    assert "Restoring states" not in printed and "Loaded model weights" not in printed  # the summary names it
    run = run_dir(tmp_path)
    log = (run / "train.log").read_text()
    assert "| Name" in log and "ResidualAttentionNet" in log and "FLOPs" not in log and "Restoring states" in log
    assert read_offline_run(next((run / "wandb").glob("offline-run-*"))).exit_code == 0
    asked = run_script(
        "train.py", *overrides, "auto_resume=false", cwd=tmp_path, env={"WANDB_QUIET": "false"}, unset=("WANDB_SILENT",)
    )
    assert re.search(r"^wandb: Run summary:", asked.stdout + asked.stderr, re.MULTILINE)

    evaluation = ["pretrained=resattn56_cifar.fmnist", "data=fashion_mnist", "data.max_eval_samples=64"]
    evaluated = run_script("eval.py", *evaluation, cwd=tmp_path)
    printed = evaluated.stdout + evaluated.stderr
    out = eval_dir(tmp_path).relative_to(tmp_path)
    assert "Testing pretrained=resattn56_cifar.fmnist (resattn56_cifar)" in printed and "Loaded " not in printed
    assert re.search(r"Test at 28 px, 64 images: test/acc1=\d\.\d{4}, test/acc5=", printed)
    assert not re.search(r"\d\.\d{7}", printed)
    written = "eval_results.json, per_class_accuracy_28.csv, confusion_matrix_28.png"
    assert f"Evaluation written to {out}: {written}" in printed


def test_the_confusion_matrix_shows_its_counts() -> None:
    figure = confusion_figure(torch.tensor([[5, 1, 0], [2, 7, 0], [0, 0, 3]]), ["a", "b", "c"])
    (axes, _) = figure.axes  # the matrix and its colour bar
    assert [text.get_text() for text in axes.texts] == ["5", "1", "0", "2", "7", "0", "0", "0", "3"]
    assert axes.get_title() == "confusion matrix (18 images)"
