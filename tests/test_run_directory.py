"""Running a command again, next to another run, and after a crash: the run directory's lock, record and W&B id."""

from __future__ import annotations

import csv
import logging
import os
import re
import signal
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from files import truncate, write_tree
from helpers import SMOKE, SMOKE_TRAINING, compose_config, quiet_trainer, run_script, start_script
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from torch import nn

from analysis.wandb_offline import read_offline_run
from datamodules.errors import DamagedDataError
from lightning_modules.callbacks import LastCheckpoint
from lightning_modules.run_directory import RunDirectory
from lightning_modules.training_task import note_precision, save_run_config, train


def the_run(cwd: Path, task: str = "train") -> Path:
    (run,) = (cwd / "logs" / task / "runs").iterdir()
    return run


class RisingScore(L.LightningModule):
    """A model whose validation score is its epoch number: every epoch is the best so far."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self.layer(batch).sum()

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/acc1", float(self.current_epoch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.randn(8, 2), batch_size=4)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.randn(4, 2), batch_size=4)


def test_last_checkpoint_records_the_best_checkpoint_chosen_at_its_own_epoch(tmp_path: Path) -> None:
    """The epoch-end last.ckpt holds the best-checkpoint callback's state after that epoch's choice, whatever the
    order of the callbacks in the config, so a resumed or re-tested run never points at a deleted file."""
    last = LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=100)
    best = ModelCheckpoint(dirpath=tmp_path, filename="best-{epoch}", monitor="val/acc1", mode="max", save_top_k=1)
    trainer = quiet_trainer(tmp_path, max_epochs=3, callbacks=[last, best], enable_checkpointing=True)
    trainer.fit(RisingScore())
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["callbacks"]
    (saved,) = (v for k, v in state.items() if k.startswith("ModelCheckpoint"))
    assert Path(saved["best_model_path"]).name == "best-epoch=2.ckpt" and Path(saved["best_model_path"]).is_file()
    assert float(saved["best_model_score"]) == 2.0
    assert sorted(p.name for p in tmp_path.glob("best-*.ckpt")) == ["best-epoch=2.ckpt"]


@pytest.mark.slow
def test_rerun_of_a_finished_run_reports_it_and_a_longer_run_continues(tmp_path: Path) -> None:
    base = [*SMOKE, "logger=csv"]
    run_script("train.py", *base, "trainer.max_epochs=2", cwd=tmp_path)
    run = the_run(tmp_path)
    best_before = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))

    saved = (run / ".hydra" / "config.yaml").read_text()

    again = run_script("train.py", *base, "trainer.max_epochs=2", "test=false", cwd=tmp_path)
    out = again.stdout + again.stderr
    assert "This run already finished (trainer.max_epochs=2" in out and "not training it again" in out
    assert re.search(r"results: .*test/acc1=\d\.\d{4}", out) and "Evaluate it: python eval.py 'ckpt_path=" in out
    assert "Restoring states" not in out and len(list((run / "csv").glob("version_*"))) == 1  # nothing re-ran
    assert (run / ".hydra" / "config.yaml").read_text() == saved  # still the config it was trained with

    longer = run_script("train.py", *base, "trainer.max_epochs=4", cwd=tmp_path)
    out = longer.stdout + longer.stderr
    assert "Resuming from" in out and "Continuing this run with trainer.max_epochs: 2 -> 4" in out
    assert "differs from the one this run was trained with" not in out  # a longer schedule is no warning
    record = RunDirectory(run).read_record()
    (change,) = record["config_changes"]
    assert change["changes"] == {"trainer.max_epochs": [2, 4]} and change["resumed_at_step"] == 10
    # one precision from the start (resumed on the same machine), the one its test ran in
    assert record["precision"] == [{"precision": record["finished"]["precision"], "from_step": 0}]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20  # 5 per epoch
    versions = sorted((run / "csv").glob("version_*/metrics.csv"))
    assert len(versions) == 2  # a restart writes a new CSV version, never over the first
    epochs = [{row["epoch"] for row in csv.DictReader(path.open()) if row.get("train/loss")} for path in versions]
    assert epochs == [{"0", "1"}, {"2", "3"}]
    (best,) = (run / "checkpoints").glob("best-*.ckpt")  # save_top_k=1 holds across the restart
    assert best_before and best.is_file()
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (saved,) = (v for k, v in state.items() if k.startswith("ModelCheckpoint"))
    assert Path(saved["best_model_path"]) == best


@pytest.mark.slow
def test_a_second_run_in_the_same_directory_is_refused_and_a_killed_runs_lock_is_taken_over(tmp_path: Path) -> None:
    command = [*SMOKE, "logger=csv", "callbacks.last_checkpoint.every_n_train_steps=1"]
    first = start_script("train.py", *command, "trainer.max_epochs=1000", cwd=tmp_path)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((tmp_path / "logs").glob("train/runs/*/checkpoints/last.ckpt")):
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.1)
        run = the_run(tmp_path)
        os.kill(first.pid, signal.SIGSTOP)  # frozen, so that its files stay as they are while we compare
        before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run.rglob("*")}

        second = run_script("train.py", *command, "trainer.max_epochs=2", cwd=tmp_path, check=False)
        assert second.returncode != 0
        message = second.stdout + second.stderr
        assert f"{run.name} is in use by process {first.pid}" in message and "train.py" in message
        assert "Traceback" not in message and "the traceback is in" not in message  # the log is the other run's
        assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in run.rglob("*")} == before
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()

    epoch = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"]
    third = run_script("train.py", *command, f"trainer.max_epochs={epoch + 2}", cwd=tmp_path)
    out = third.stdout + third.stderr
    assert f"from process {first.pid}, which ended without releasing it" in out and "Resuming from" in out
    assert (run / ".lock").read_text() == ""  # released at the end


@pytest.mark.slow
def test_a_resumed_run_continues_its_wandb_run(tmp_path: Path) -> None:
    run_script("train.py", *SMOKE, "trainer.max_epochs=1", cwd=tmp_path)
    resumed = run_script("train.py", *SMOKE, "trainer.max_epochs=2", cwd=tmp_path)
    run = the_run(tmp_path)
    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2
    ids = {folder.name.rsplit("-", 1)[1] for folder in folders}
    assert len(ids) == 1, folders  # one W&B run, synced from both folders: `wandb sync <run>/wandb/offline-run-*`
    first, second = (read_offline_run(folder) for folder in folders)
    assert first.finished and second.finished
    steps = [h["trainer/global_step"] for h in second.history if "trainer/global_step" in h]
    assert min(steps) > max(h["trainer/global_step"] for h in first.history if "trainer/global_step" in h)
    console = resumed.stdout + resumed.stderr
    assert "anonymous setting" not in console and "worker processes in total" not in console


def test_resuming_under_an_edited_config_warns_and_records_the_old_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = RunDirectory(tmp_path)
    first = OmegaConf.create({"optimizer": {"lr": 0.1, "momentum": 0.9}, "data": {"dir": "${paths.root}/data"}})
    run.save_config(first, None, [])
    edited = OmegaConf.create({"optimizer": {"lr": 0.05, "momentum": 0.9}, "data": {"dir": "${paths.root}/data"}})
    edited.optimizer.nesterov = True
    with caplog.at_level(logging.INFO):
        save_run_config(run, edited, (tmp_path / "last.ckpt", {"global_step": 7}))
    assert "differs from the one this run was trained with so far: optimizer.lr: 0.1 -> 0.05; " in caplog.text
    assert "optimizer.nesterov: None -> True" in caplog.text
    (change,) = run.read_record()["config_changes"]
    assert change["changes"] == {"optimizer.lr": [0.1, 0.05], "optimizer.nesterov": [None, True]}
    assert change["resumed_at_step"] == 7
    assert run.saved_config() == edited  # the run goes on under the new values, saved for the next resume
    caplog.clear()
    save_run_config(run, edited, (tmp_path / "last.ckpt", {"global_step": 9}))  # unchanged: nothing to say
    assert caplog.text == "" and len(run.read_record()["config_changes"]) == 1
    save_run_config(run, first, None)  # a new start replaces the config without comparing
    assert len(run.read_record()["config_changes"]) == 1 and run.saved_config() == first


def test_a_run_resumed_in_another_precision_says_so_and_records_both(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``${fast_precision:cpu}`` resolves per machine: a run started where the CPU computes bf16 and resumed where it
    does not continues in full precision, and says so."""
    run = RunDirectory(tmp_path)
    with caplog.at_level(logging.INFO):
        note_precision(run, "bf16-mixed", 0)
        note_precision(run, "bf16-mixed", 885)  # resumed on a machine like the first: nothing to say or record
    assert caplog.text == "" and run.read_record()["precision"] == [{"precision": "bf16-mixed", "from_step": 0}]
    with caplog.at_level(logging.INFO):
        note_precision(run, "32-true", 900)
    assert "trained in bf16-mixed precision until step 900 and continues in 32-true" in caplog.text
    assert "resume with trainer.precision=bf16-mixed" in caplog.text
    history = [{"precision": "bf16-mixed", "from_step": 0}, {"precision": "32-true", "from_step": 900}]
    assert run.read_record()["precision"] == history


def test_a_finished_run_without_checkpoints_is_not_trained_again(tmp_path: Path) -> None:
    """callbacks=none writes no last.ckpt: the run's record alone says it finished; auto_resume=false starts over."""
    overrides = [*(o for o in SMOKE if not o.startswith("callbacks.")), "logger=csv", "callbacks=none"]
    first = train(compose_config("train", overrides, tmp_path))
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert train(compose_config("train", overrides, tmp_path)) == first
    assert len(list((tmp_path / "run" / "csv").glob("version_*"))) == 1  # nothing ran again
    train(compose_config("train", [*overrides, "auto_resume=false"], tmp_path))
    assert len(list((tmp_path / "run" / "csv").glob("version_*"))) == 2


def test_the_record_knows_a_finished_run_by_its_length(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    assert run.finished({"max_steps": -1, "max_epochs": 2}) is None
    first_id = run.wandb_id(resuming=False, new_id="aaaa")
    assert run.wandb_id(resuming=True, new_id="bbbb") == first_id == "aaaa"
    run.mark_finished({"max_steps": -1, "max_epochs": 2}, {"test/acc1": 0.5}, tested=True)
    assert run.finished({"max_steps": -1, "max_epochs": 2})["metrics"] == {"test/acc1": 0.5}
    assert run.finished({"max_steps": -1, "max_epochs": 3}) is None  # a longer run trains on
    assert run.wandb_id(resuming=False, new_id="cccc") == "cccc"  # started over: a new W&B run
    run.forget_finished()
    assert run.finished({"max_steps": -1, "max_epochs": 2}) is None
    (tmp_path / "run.json").write_text("{not json")
    assert run.read_record() == {}  # a damaged record never blocks a run


def test_a_failed_run_is_recorded_as_failed_and_resumes_once_its_data_are_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run that ends by an error (here: its images damaged before a resumption) is failed in run.json (state,
    step, message), in its W&B run (exit code 1, the message in the summary) and on the console; once the images are
    restored, rerunning the command resumes from last.ckpt and finishes, and the records say so."""
    root = tmp_path / "images"
    images = write_tree(root / "train", ["cat", "dog"], per_class=12)
    write_tree(root / "test", ["cat", "dog"], per_class=2, seed=1)
    folder = ["data=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=8", "data.num_workers=0"]
    command = [*SMOKE_TRAINING, *folder]
    train(compose_config("train", [*command, "trainer.max_epochs=1"], tmp_path))
    run = RunDirectory(tmp_path / "run")
    assert run.read_record()["status"]["state"] == "finished"

    originals = {path: path.read_bytes() for path in images}
    for path in images:
        truncate(path)
    with pytest.raises(DamagedDataError, match="cannot decode image file"), caplog.at_level(logging.INFO):
        train(compose_config("train", [*command, "trainer.max_epochs=2"], tmp_path))
    status = run.read_record()["status"]
    assert status["state"] == "failed" and status["step"] == 2  # the first epoch's 2 steps were done
    assert status["message"].startswith("DamagedDataError: cannot decode image file") and "\n" not in status["message"]
    assert "finished" not in run.read_record()
    failed = read_offline_run(sorted((run.path / "wandb").glob("offline-run-*"))[-1])
    assert failed.exit_code == 1 and not failed.preempting
    assert failed.summary["run/error"] == status["message"] and failed.summary["run/state"] == "failed"
    said = "The run failed at step 2 (recorded as failed in run.json and its W&B run); {}/last.ckpt holds step 2: rerun"
    assert said.format(tmp_path / "run" / "checkpoints") in caplog.text

    for path, data in originals.items():
        path.write_bytes(data)
    metrics = train(compose_config("train", [*command, "trainer.max_epochs=2"], tmp_path))
    assert "test/acc1" in metrics and "Resuming from" in caplog.text
    record = run.read_record()
    assert record["status"]["state"] == "finished" and record["status"]["step"] == 4 and record["finished"]
    resumed = read_offline_run(sorted((run.path / "wandb").glob("offline-run-*"))[-1])
    assert resumed.exit_code == 0 and resumed.summary["run/state"] == "finished" and resumed.summary["run/error"] == ""
