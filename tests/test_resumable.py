"""Exact resumption: seeded epoch order and augmentation, mid-epoch loader state (the real kill -9 of a run is in
test_stopping.py)."""

from __future__ import annotations

import pytest
import torch

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
