"""Label noise for Table 5 (docs/paper.md §5.2): the confusion matrix Q, its sampling, and the training split only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from files import write_tree
from torch.utils.data import Subset

from datamodules import ImageFolderDataModule, SyntheticDataModule
from datamodules.datasets import TensorImageDataset, TransformedSubset
from datamodules.label_noise import (
    RelabeledDataset,
    apply_transition,
    dataset_labels,
    flip_fraction,
    noisy_labels,
    transition_matrix,
)


def test_transition_matrix_is_the_papers() -> None:
    q = transition_matrix(10, 0.3)
    assert torch.allclose(q.diagonal(), torch.full((10,), 0.7, dtype=torch.float64))
    off = q[~torch.eye(10, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, 0.3 / 9))
    assert torch.allclose(q.sum(1), torch.ones(10, dtype=torch.float64))
    assert torch.equal(transition_matrix(4, 0.0), torch.eye(4, dtype=torch.float64))


def test_noise_level_is_the_expected_flip_fraction_and_flips_are_uniform() -> None:
    clean = torch.arange(40000) % 10
    noisy = noisy_labels(clean, 10, 0.3, seed=0)
    assert flip_fraction(clean, noisy) == pytest.approx(0.3, abs=0.01)
    # Off-diagonal mass is uniform over the other 9 classes: the empirical Q matches row by row.
    counts = torch.zeros(10, 10)
    counts.index_put_((clean, noisy), torch.ones(len(clean)), accumulate=True)
    empirical = counts / counts.sum(1, keepdim=True)
    assert torch.allclose(empirical, transition_matrix(10, 0.3).float(), atol=0.015)
    assert torch.equal(noisy_labels(clean, 10, 0.0, seed=0), clean)


def test_deterministic_for_a_seed_and_follows_any_q() -> None:
    clean = torch.arange(1000) % 5
    assert torch.equal(noisy_labels(clean, 5, 0.5, seed=3), noisy_labels(clean, 5, 0.5, seed=3))
    assert not torch.equal(noisy_labels(clean, 5, 0.5, seed=3), noisy_labels(clean, 5, 0.5, seed=4))
    shift = torch.roll(torch.eye(5, dtype=torch.float64), 1, dims=1)  # i -> i + 1 with probability 1
    assert torch.equal(apply_transition(clean, shift, seed=0), (clean + 1) % 5)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        transition_matrix(10, 1.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        transition_matrix(1, 0.1)
    with pytest.raises(ValueError, match="probability distribution"):
        apply_transition(torch.zeros(3, dtype=torch.long), torch.ones(2, 2, dtype=torch.float64), seed=0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        apply_transition(torch.tensor([0, 2]), torch.eye(2, dtype=torch.float64), seed=0)
    with pytest.raises(ValueError, match="label_noise"):
        SyntheticDataModule(label_noise=1.0)
    with pytest.raises(TypeError, match="exposing its labels"):
        dataset_labels([(torch.zeros(1), 0)])  # type: ignore[arg-type]


def _labels(split: TransformedSubset) -> torch.Tensor:
    """The labels a split serves (read without transforming the images; checked against items for a few)."""
    labels = dataset_labels(split.dataset)[torch.tensor(split.indices)]
    assert [split[i][1] for i in range(3)] == labels[:3].tolist()
    return labels


def test_only_the_training_split_is_noisy_and_it_is_reproducible() -> None:
    settings = dict(num_train_samples=2000, num_test_samples=200, image_size=8)
    clean = SyntheticDataModule(**settings)
    noisy = SyntheticDataModule(**settings, label_noise=0.5, label_noise_seed=1)
    again = SyntheticDataModule(**settings, label_noise=0.5, label_noise_seed=1)
    for dm in (clean, noisy, again):
        dm.setup()
    assert clean.label_noise_realised is None
    changed = (_labels(clean.train_set) != _labels(noisy.train_set)).double().mean().item()
    assert changed == pytest.approx(noisy.label_noise_realised) and changed == pytest.approx(0.5, abs=0.05)
    assert torch.equal(_labels(noisy.train_set), _labels(again.train_set))
    assert torch.equal(_labels(clean.val_set), _labels(noisy.val_set))
    assert torch.equal(_labels(clean.test_set), _labels(noisy.test_set))
    assert torch.equal(clean.train_set[0][0], noisy.train_set[0][0])  # same images
    # An image's noisy label does not depend on how much of the pool is used.
    subset = SyntheticDataModule(**settings, label_noise=0.5, label_noise_seed=1, max_train_samples=100)
    subset.setup()
    position = {index: i for i, index in enumerate(noisy.train_set.indices)}
    assert all(
        subset.train_set[i][1] == noisy.train_set[position[index]][1]
        for i, index in enumerate(subset.train_set.indices)
    )


def test_folder_data_with_label_noise(tmp_path: Path) -> None:
    write_tree(tmp_path / "train", ["a", "b", "c"], per_class=8)
    write_tree(tmp_path / "test", ["a", "b", "c"], per_class=2, seed=1)
    dm = ImageFolderDataModule(root=str(tmp_path), num_classes=3, image_size=16, label_noise=0.6, val_fraction=0.25)
    dm.setup()
    assert isinstance(dm.train_set.dataset, RelabeledDataset)
    pool = dm.val_set.dataset
    noisy = dm.train_set.dataset.labels
    clean = dataset_labels(pool)
    assert dm.label_noise_realised == pytest.approx(flip_fraction(clean, noisy, dm.train_set.indices))
    assert [dm.val_set[i][1] for i in range(len(dm.val_set))] == clean[dm.val_set.indices].tolist()


def test_dataset_labels_reads_subsets_without_decoding() -> None:
    data = TensorImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([3, 1, 2, 0]))
    assert dataset_labels(Subset(data, [2, 0])).tolist() == [2, 3]
    assert dataset_labels(TransformedSubset(data, [1, 3], transform=lambda image: image)).tolist() == [1, 0]
    relabeled = RelabeledDataset(data, torch.tensor([0, 0, 0, 0]))
    assert relabeled[0][1] == 0 and torch.equal(relabeled[0][0], data[0][0])
