"""Exact resumption: seeded epoch order and augmentation, mid-epoch loader state, and a real kill -9."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch
from conftest import SMOKE, latest_step, run_script, start_script

from datamodules import SyntheticDataModule
from datamodules.resumable import EpochSampler, sample_seed


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    first = list(a)
    assert sorted(i for _, i in first) == list(range(50)) and {e for e, _ in first} == {0}
    assert list(b) == first
    a.set_epoch(1)
    second = list(a)
    assert [i for _, i in second] != [i for _, i in first]
    assert list(EpochSampler(50, seed=4)) != first
    a.start = 20
    assert list(a) == second[20:]
    assert list(a) == second  # the skip applies once
    assert len({sample_seed(0, e, i) for e in range(20) for i in range(200)}) == 4000


def batches(loader: torch.utils.data.DataLoader, count: int | None = None) -> list[torch.Tensor]:
    out = []
    for images, _ in loader:
        out.append(images)
        if count is not None and len(out) == count:
            break
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_mid_epoch_with_the_same_augmented_batches(workers: int) -> None:
    def datamodule() -> SyntheticDataModule:
        dm = SyntheticDataModule(image_size=12, num_train_samples=120, batch_size=16, num_workers=workers)
        dm.setup()
        return dm

    whole = datamodule().train_dataloader()
    whole.sampler.set_epoch(2)
    reference = batches(whole)
    assert len(reference) == len(whole) == 6

    interrupted = datamodule().train_dataloader()
    interrupted.sampler.set_epoch(2)
    head = batches(interrupted, 2)
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches": 2}

    torch.manual_seed(1234)  # a new process: other global random state
    resumed = datamodule().train_dataloader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    tail = batches(resumed)
    assert len(tail) == 4
    for got, want in zip(head + tail, reference, strict=True):
        assert torch.equal(got, want)
    resumed.sampler.set_epoch(3)
    assert len(batches(resumed)) == 6  # the next epoch is whole again


@pytest.mark.slow
def test_kill_9_mid_epoch_then_rerun_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """SIGKILL after a mid-epoch checkpoint; the rerun of the same command continues from it and, on
    CPU with a fixed seed, ends with exactly the metrics of a run that was never interrupted."""
    overrides = [
        *SMOKE,
        "data.num_train_samples=400",  # 11 batches per epoch
        "trainer.max_epochs=2",
        "callbacks.last_checkpoint.every_n_train_steps=3",
        "logger=csv",
    ]
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    clean.mkdir(), crashed.mkdir()
    run_script("train.py", *overrides, cwd=clean)

    proc = start_script("train.py", *overrides, cwd=crashed)
    runs = crashed / "logs" / "train" / "runs"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        run = next(runs.glob("*"), None) if runs.exists() else None
        if run is not None and latest_step(run) >= 15:  # in epoch 2, past a mid-epoch save
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run = next(runs.glob("*"))
    killed_at = latest_step(run)
    assert 15 <= killed_at < 22

    resumed = run_script("train.py", *overrides, cwd=crashed)
    assert "Resuming from" in resumed.stdout + resumed.stderr

    def final(path: Path) -> dict[str, torch.Tensor]:
        ckpt = torch.load(next((path / "logs" / "train" / "runs").glob("*/checkpoints/last.ckpt")), weights_only=True)
        assert ckpt["global_step"] == 22
        return ckpt["state_dict"]

    expected, got = final(clean), final(crashed)
    for name, value in expected.items():
        assert torch.equal(value, got[name]), name
