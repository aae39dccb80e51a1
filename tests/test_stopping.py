"""Interrupted runs: kill -9, SIGTERM (a scheduler, ``kill``) and Ctrl-C. train.py resumes exactly where the last
checkpoint left it; a stop (SIGTERM, Ctrl-C) ends at a step boundary with last.ckpt written there and a failing exit
status; eval.py keeps what it finished. Real signals to real scripts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers import SMOKE, latest_step, run_script, start_script

from analysis.wandb_offline import read_offline_run

RUN = [
    *SMOKE,
    "data.num_train_samples=400",  # 11 batches per epoch, 33 steps
    "trainer.max_epochs=3",
    "logger=csv",
]
ONLY_STOPS_SAVE = "callbacks.last_checkpoint.every_n_train_steps=1000"  # besides the ends of epochs


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final weights of :data:`RUN` trained without an interruption (how often last.ckpt is written does not
    change them)."""
    clean = tmp_path_factory.mktemp("uninterrupted")
    run_script("train.py", *RUN, cwd=clean)
    final = torch.load(next(clean.glob("logs/train/runs/*/checkpoints/last.ckpt")), weights_only=True)
    assert final["global_step"] == 33
    return final["state_dict"]


def interrupt(cwd: Path, overrides: list[str], after_step: int, how: signal.Signals) -> tuple[subprocess.Popen, Path]:
    """Start ``train.py`` in ``cwd``, send ``how`` once its last.ckpt holds ``after_step`` or later, wait for it to
    end; return the process and its run directory. Its output is in ``cwd/output.txt``."""
    proc = start_script("train.py", *overrides, cwd=cwd, output=cwd / "output.txt")
    runs = cwd / "logs" / "train" / "runs"
    deadline = time.time() + 240
    run = None
    while time.time() < deadline and proc.poll() is None:
        run = next(runs.glob("*"), None) if runs.exists() else None
        if run is not None and latest_step(run) >= after_step:
            break
        time.sleep(0.05)
    assert run is not None and proc.poll() is None, "the run finished before it could be interrupted"
    os.kill(proc.pid, how)
    proc.wait(timeout=60)
    return proc, run


def assert_resumes_exactly(cwd: Path, run: Path, overrides: list[str], expected: dict[str, torch.Tensor]) -> None:
    resumed = run_script("train.py", *overrides, cwd=cwd)
    assert "Resuming from" in resumed.stdout + resumed.stderr
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 33
    for name, value in expected.items():
        assert torch.equal(value, final["state_dict"][name]), name


@pytest.mark.slow
def test_kill_9_mid_epoch_then_rerun_matches_an_uninterrupted_run(
    tmp_path: Path, uninterrupted: dict[str, torch.Tensor]
) -> None:
    """SIGKILL after a mid-epoch checkpoint: the rerun of the same command continues from it and, on CPU with a
    fixed seed, ends with exactly the weights of a run that was never interrupted."""
    overrides = [*RUN, "callbacks.last_checkpoint.every_n_train_steps=3"]
    proc, run = interrupt(tmp_path, overrides, after_step=15, how=signal.SIGKILL)  # in epoch 2, past a save
    assert proc.returncode == -signal.SIGKILL
    assert 15 <= latest_step(run) < 33
    assert_resumes_exactly(tmp_path, run, overrides, uninterrupted)


@pytest.mark.slow
def test_kill_9_mid_epoch_on_the_gpu_resident_path_resumes_exactly(tmp_path: Path) -> None:
    """The same with the batches cut and augmented in the training process (``data.gpu_resident=true``, the attention
    study's path): its loader's position is in the checkpoint, so the rerun gets the rest of the epoch."""
    overrides = [*RUN, "data.gpu_resident=true", "callbacks.last_checkpoint.every_n_train_steps=3"]
    clean = tmp_path / "clean"
    clean.mkdir()
    run_script("train.py", *overrides, cwd=clean)
    expected = torch.load(next(clean.glob("logs/train/runs/*/checkpoints/last.ckpt")), weights_only=True)
    proc, run = interrupt(tmp_path, overrides, after_step=15, how=signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL and 15 <= latest_step(run) < 33
    assert_resumes_exactly(tmp_path, run, overrides, expected["state_dict"])


@pytest.mark.slow
def test_sigterm_stops_at_a_step_with_last_ckpt_written_there_and_the_rerun_matches(
    tmp_path: Path, uninterrupted: dict[str, torch.Tensor]
) -> None:
    """SIGTERM mid-epoch: the run ends at the end of its training step with last.ckpt written there (no other save
    was due), says so, exits 143 (not 0: a scheduler sees a stopped job), releases its directory without marking it
    finished (run.json and its W&B run say stopped, not failed), and the rerun ends with exactly the weights of a
    run never stopped."""
    overrides = [*(o for o in RUN if o != "logger=csv"), "logger=wandb", ONLY_STOPS_SAVE]
    proc, run = interrupt(tmp_path, overrides, after_step=11, how=signal.SIGTERM)  # stop in the second epoch
    assert proc.returncode == 143
    said = (tmp_path / "output.txt").read_text()
    stopped_at = latest_step(run)
    assert 11 < stopped_at < 33
    assert f"Stopped by SIGTERM at step {stopped_at};" in said and f"holds step {stopped_at}. Rerun" in said
    assert "Traceback" not in said and (run / ".lock").read_text() == "" and "failed" not in said
    record = json.loads((run / "run.json").read_text())
    assert "finished" not in record and record["status"]["state"] == "stopped"
    assert record["status"]["step"] == stopped_at and "message" not in record["status"]
    stopped = read_offline_run(next((run / "wandb").glob("offline-run-*")))
    assert stopped.exit_code == 143 and stopped.preempting and stopped.summary["run/state"] == "stopped"
    assert_resumes_exactly(tmp_path, run, overrides, uninterrupted)
    assert json.loads((run / "run.json").read_text())["status"]["state"] == "finished"


@pytest.mark.slow
def test_ctrl_c_stops_at_a_step_like_sigterm(tmp_path: Path) -> None:
    proc, run = interrupt(tmp_path, [*RUN, ONLY_STOPS_SAVE], after_step=11, how=signal.SIGINT)
    assert proc.returncode == 130
    said = (tmp_path / "output.txt").read_text()
    stopped_at = latest_step(run)
    assert 11 < stopped_at < 33 and "Ctrl-C: stopping after the current training step" in said
    assert f"Stopped by Ctrl-C at step {stopped_at};" in said and "Traceback" not in said


@pytest.mark.slow
def test_ctrl_c_while_testing_stops_at_once_and_the_rerun_tests_again(tmp_path: Path) -> None:
    overrides = [*SMOKE, "logger=csv", "callbacks.progress_bar.refresh_rate=1", "data.num_test_samples=8000"]
    output = tmp_path / "output.txt"
    proc = start_script("train.py", *overrides, cwd=tmp_path, output=output)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and "Testing DataLoader" not in output.read_text():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its test could be interrupted"
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=60) == 1  # Lightning's own end of an interrupted test
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert not (run / "run.json").is_file() or "finished" not in json.loads((run / "run.json").read_text())
    again = run_script("train.py", *overrides, cwd=tmp_path)
    assert "Resuming from" in again.stdout + again.stderr and "test/acc1=" in again.stdout + again.stderr
    assert json.loads((run / "run.json").read_text())["finished"]["tested"]


TORCHRUN = ("-m", "torch.distributed.run", "--nproc_per_node", "2")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("launcher", "how", "to_group", "status", "name"),
    [
        pytest.param((), signal.SIGINT, True, 130, "Ctrl-C", id="ctrl-c-in-a-terminal"),
        pytest.param((), signal.SIGTERM, False, 143, "SIGTERM", id="sigterm-to-rank-zero"),
        pytest.param(TORCHRUN, signal.SIGTERM, False, 1, "SIGTERM", id="sigterm-to-torchrun"),
    ],
)
def test_a_stopped_ddp_run_stops_every_rank_at_one_step(
    launcher: tuple[str, ...], how: signal.Signals, to_group: bool, status: int, name: str, tmp_path: Path
) -> None:
    """A DDP run (2 gloo ranks) stopped by Ctrl-C in its terminal (every rank gets it), by SIGTERM to rank zero
    (passed on to the ranks Lightning started) or by SIGTERM to torchrun (which passes it to every rank): after the
    next step the ranks agree to stop, all save that step and end. Nothing collective runs in a signal handler, so
    nothing hangs or crashes (Lightning's own SIGTERM handler broadcasts from inside the handler: a gloo crash).
    torchrun ends with its own status 1 and traceback, once its ranks have stopped."""
    overrides = [*RUN, ONLY_STOPS_SAVE, "trainer=ddp_cpu", "trainer.max_epochs=1000"]  # 6 steps per epoch
    output = tmp_path / "output.txt"
    proc = start_script("train.py", *overrides, cwd=tmp_path, output=output, process_group=True, launcher=launcher)
    runs = tmp_path / "logs" / "train" / "runs"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        run = next(runs.glob("*"), None) if runs.exists() else None
        if run is not None and latest_step(run) >= 6:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    (os.killpg if to_group else os.kill)(proc.pid, how)
    try:
        assert proc.wait(timeout=120) == status
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # ranks left hanging
    said = output.read_text()
    stopped_at = latest_step(run)
    assert f"Stopped by {name} at step {stopped_at};" in said and stopped_at > 6
    assert said.count("Traceback") == (1 if launcher else 0)  # torchrun's own, after its ranks ended
    assert said.count(f"{name}: stopping after the current training step") == 2  # each rank


@pytest.mark.slow
def test_a_stopped_evaluation_says_so_and_keeps_its_results_file(tmp_path: Path) -> None:
    output = tmp_path / "output.txt"
    proc = start_script(
        "eval.py", "pretrained=resattn56_cifar.fmnist", "data=fashion_mnist", cwd=tmp_path, output=output
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and "TPU available" not in output.read_text():
        time.sleep(0.05)  # the Trainer exists; its test of 10,000 images at 28 px takes about 15 s
    time.sleep(4)
    assert proc.poll() is None, "the evaluation ended before it could be stopped"
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    (results,) = tmp_path.glob("logs/eval/runs/*/*/eval_results.json")
    assert "Stopped by SIGTERM" in output.read_text() and json.loads(results.read_text())["sizes"] == {}
