"""Stopping a run with a signal (SIGTERM from a scheduler or ``kill``, Ctrl-C): train.py ends at a step boundary
with last.ckpt written there and resumes exactly; eval.py keeps what it finished. Real signals to real scripts."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import SMOKE, latest_step, run_script, start_script

STOPPED_RUN = [
    *SMOKE,
    "data.num_train_samples=400",  # 11 batches per epoch
    "trainer.max_epochs=3",
    "callbacks.last_checkpoint.every_n_train_steps=1000",  # only epoch ends and stops write last.ckpt
    "logger=csv",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final weights of :data:`STOPPED_RUN` trained without a stop."""
    clean = tmp_path_factory.mktemp("uninterrupted")
    run_script("train.py", *STOPPED_RUN, cwd=clean)
    return torch.load(next(clean.glob("logs/train/runs/*/checkpoints/last.ckpt")), weights_only=True)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "status", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_stopped_run_saves_its_step_and_the_rerun_matches_an_uninterrupted_run(
    stop: signal.Signals, status: int, name: str, tmp_path: Path, uninterrupted: dict[str, torch.Tensor]
) -> None:
    """SIGTERM (a scheduler, ``kill``) or Ctrl-C mid-epoch: the run ends at the end of its training step with
    last.ckpt written there, says so, exits with the signal's status (not 0), and the rerun of the same command
    ends with exactly the weights of a run never stopped."""
    output = tmp_path / "output.txt"
    proc = start_script("train.py", *STOPPED_RUN, cwd=tmp_path, output=output)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        run = next((tmp_path / "logs" / "train" / "runs").glob("*"), None)
        if run is not None and latest_step(run) >= 11:  # the first epoch is saved: stop in the second
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be stopped"
    os.kill(proc.pid, stop)
    assert proc.wait(timeout=60) == status
    said = output.read_text()
    stopped_at = latest_step(run)
    assert 11 < stopped_at < 33
    assert f"Stopped by {name} at step {stopped_at};" in said and f"holds step {stopped_at}. Rerun" in said
    assert "Traceback" not in said and (run / ".lock").read_text() == ""
    assert not (run / "run.json").is_file() or "finished" not in json.loads((run / "run.json").read_text())

    resumed = run_script("train.py", *STOPPED_RUN, cwd=tmp_path)
    assert "Resuming from" in resumed.stdout + resumed.stderr
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 33
    for key, value in uninterrupted.items():
        assert torch.equal(value, final["state_dict"][key]), key


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
