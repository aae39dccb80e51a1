"""The GPU-resident data path (datamodules/gpu_resident.py) against the torchvision pipelines, on the CPU."""

from pathlib import Path

import pytest
import torch
from files import write_cifar
from helpers import quiet_trainer
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import functional as TF

from datamodules import CIFAR10DataModule, SyntheticDataModule
from datamodules.gpu_resident import BatchAugmentation, DeviceBatchLoader, ShardedOrder
from datamodules.transforms import cifar_transform, small_image_transform
from input_conventions import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from lightning_modules import ImageClassifier

PAD = 4
OFFSETS = [(top, left, flip) for top in range(2 * PAD + 1) for left in range(2 * PAD + 1) for flip in (False, True)]
# chi-square critical values at p = 0.001 (the tests are seeded, so this only guards against a real difference)
CHI2_CRITICAL = {1: 10.83, 8: 26.12}


def all_crops(augment: BatchAugmentation, images: torch.Tensor) -> torch.Tensor:
    """``(len(OFFSETS), N, C, H, W)``: the batched op's output for every crop offset and flip decision."""
    x = augment.normalize(images)
    fill = augment.fill_value(x.shape[1], x.device)
    n = len(images)
    return torch.stack(
        [
            augment.crop_flip(x, torch.full((n,), top), torch.full((n,), left), torch.full((n,), flip), fill)
            for top, left, flip in OFFSETS
        ]
    )


def random_images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_cifar_crop_flip_equals_torchvision_for_every_offset() -> None:
    images = random_images(6, 3, 32)
    mean_image = images.float().mean(0) / 255
    augment = BatchAugmentation(mean_image=mean_image, pad=PAD, flip=True)
    normalized = torch.stack([cifar_transform(mean_image, train=False)(image) for image in images])
    assert torch.equal(augment.normalize(images), normalized)  # ToDtype(scale) then minus the mean image
    crops = all_crops(augment, images)
    for k, (top, left, flip) in enumerate(OFFSETS):
        # torchvision's RandomCrop(padding=4, fill=0) on the mean-subtracted image, then the flip
        expected = TF.crop(TF.pad(normalized, [PAD] * 4, fill=0), top, left, 32, 32)
        expected = TF.horizontal_flip(expected) if flip else expected
        assert torch.equal(crops[k], expected), (top, left, flip)


def test_real_torchvision_transform_output_is_one_of_the_batched_crops() -> None:
    images = random_images(16, 3, 32, seed=1)
    mean_image = images.float().mean(0) / 255
    crops = all_crops(BatchAugmentation(mean_image=mean_image, pad=PAD, flip=True), images)
    transform = cifar_transform(mean_image, train=True)
    torch.manual_seed(0)
    for i, image in enumerate(images):
        out = transform(image)
        matches = [k for k in range(len(OFFSETS)) if torch.equal(crops[k, i], out)]
        assert len(matches) == 1


def test_fashion_mnist_border_is_a_normalised_black_pixel() -> None:
    mean, std = FASHION_MNIST_MEAN, FASHION_MNIST_STD
    images = random_images(4, 1, 28, seed=2)
    augment = BatchAugmentation(mean=mean, std=std, pad=PAD, flip=True, pad_before_normalize=True)
    crops = all_crops(augment, images)
    eval_transform = small_image_transform(28, mean, std, pad=0, flip=False)
    for k, (top, left, flip) in enumerate(OFFSETS):
        # torchvision pads the raw uint8 image with 0, then scales and normalises
        raw = TF.crop(TF.pad(images, [PAD] * 4, fill=0), top, left, 28, 28)
        raw = TF.horizontal_flip(raw) if flip else raw
        assert torch.equal(crops[k], eval_transform(raw))
    corner = crops[OFFSETS.index((0, 0, False)), 0, 0, 0, 0]
    assert corner == (torch.tensor(0.0) - mean[0]) / std[0]  # black, normalised (not 0)


def _counts(values: torch.Tensor, bins: int) -> torch.Tensor:
    return torch.bincount(values, minlength=bins).double()


def _chi2_two_sample(a: torch.Tensor, b: torch.Tensor) -> float:
    """Chi-square statistic of homogeneity of two count vectors."""
    total = a + b
    keep = total > 0
    a, b, total = a[keep], b[keep], total[keep]
    ea, eb = total * a.sum() / total.sum(), total * b.sum() / total.sum()
    return float(((a - ea) ** 2 / ea + (b - eb) ** 2 / eb).sum())


def test_offset_and_flip_distributions_match_torchvision() -> None:
    draws = 3000
    image = random_images(1, 3, 32, seed=3)
    mean_image = torch.zeros(3, 32, 32)
    augment = BatchAugmentation(mean_image=mean_image, pad=PAD, flip=True)
    # identify torchvision's (top, left, flip) per draw through a hash of the output
    weights = torch.rand(3 * 32 * 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    keys = {float(c.double().flatten() @ weights): k for k, c in enumerate(all_crops(augment, image)[:, 0])}
    assert len(keys) == len(OFFSETS)
    transform = cifar_transform(mean_image, train=True)
    torch.manual_seed(0)
    seen = torch.tensor([keys[float(transform(image[0]).double().flatten() @ weights)] for _ in range(draws)])
    tv = torch.tensor(OFFSETS, dtype=torch.long)[seen]  # (draws, 3): top, left, flip
    top, left, flip = augment.sample(draws, torch.device("cpu"), torch.Generator().manual_seed(1))
    for ours, theirs, bins in ((top, tv[:, 0], 9), (left, tv[:, 1], 9), (flip.long(), tv[:, 2], 2)):
        ours_counts, theirs_counts = _counts(ours, bins), _counts(theirs, bins)
        assert _chi2_two_sample(ours_counts, theirs_counts) < CHI2_CRITICAL[bins - 1]
        uniform = torch.full((bins,), draws / bins, dtype=torch.float64)
        for counts in (ours_counts, theirs_counts):  # both uniform over 0..2*pad, flips with p = 0.5
            assert float(((counts - uniform) ** 2 / uniform).sum()) < CHI2_CRITICAL[bins - 1]


def test_sharded_order_splits_epochs_across_ranks() -> None:
    n, world = 103, 3
    orders = [ShardedOrder(n, shuffle=True, seed=5, rank=r, world_size=world) for r in range(world)]
    first = [o.indices() for o in orders]
    assert all(len(idx) == len(o) == n // world for idx, o in zip(first, orders, strict=True))
    together = torch.cat(first)
    assert len(together.unique()) == len(together)  # disjoint across ranks
    for o in orders:
        o.set_epoch(1)
    assert not torch.equal(orders[0].indices(), first[0])
    orders[0].set_epoch(0)
    assert torch.equal(orders[0].indices(), first[0])  # reproducible by epoch
    evaluation = [ShardedOrder(n, shuffle=False, rank=r, world_size=world).indices() for r in range(world)]
    assert sorted(torch.cat(evaluation).tolist()) == list(range(n))  # every sample once, nothing padded
    with pytest.raises(ValueError, match="rank"):
        ShardedOrder(n, shuffle=True, rank=3, world_size=3)


def test_device_loader_resumes_mid_epoch_with_the_same_augmented_batches() -> None:
    """The loader's state in a checkpoint (epoch, batches handed out) gives a new loader the rest of that epoch:
    the same samples, cropped and flipped as they would have been (the skipped batches' draws replayed)."""

    def loader() -> DeviceBatchLoader:
        augment = BatchAugmentation(mean=(0.5,) * 3, std=(0.25,) * 3, pad=PAD, flip=True)
        return DeviceBatchLoader(
            random_images(100, 3, 8),
            torch.arange(100) % 10,
            augment,
            batch_size=16,
            shuffle=True,
            drop_last=True,
            seed=3,
        )

    whole = loader()
    whole.sampler.set_epoch(2)
    reference = list(whole)
    interrupted = loader()
    interrupted.sampler.set_epoch(2)
    batches = iter(interrupted)
    head = [next(batches), next(batches)]
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches": 2}
    torch.manual_seed(1234)  # a new process: other global random state
    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(2)
    tail = list(resumed)
    assert len(tail) == len(reference) - 2
    for (x, y), (want_x, want_y) in zip(head + tail, reference, strict=True):
        assert torch.equal(x, want_x) and torch.equal(y, want_y)
    resumed.sampler.set_epoch(3)
    assert len(list(resumed)) == len(reference)  # the next epoch is whole again
    other_epoch = loader()
    other_epoch.load_state_dict(state)
    assert len(list(other_epoch)) == len(reference)  # a state of another epoch (0 here) is not applied


def test_device_loader_batches_labels_and_length() -> None:
    images = random_images(50, 3, 8)
    labels = torch.arange(50) % 10
    augment = BatchAugmentation(mean=(0.5,) * 3, std=(0.25,) * 3)
    train = DeviceBatchLoader(images, labels, augment, batch_size=16, shuffle=True, drop_last=True)
    batches = list(train)
    assert len(batches) == len(train) == 3
    assert all(x.shape == (16, 3, 8, 8) and x.dtype == torch.float32 and y.shape == (16,) for x, y in batches)
    evaluation = DeviceBatchLoader(images, labels, augment, batch_size=16, shuffle=False, drop_last=False)
    x_all = torch.cat([x for x, _ in evaluation])
    assert len(evaluation) == 4 and torch.equal(torch.cat([y for _, y in evaluation]), labels)
    assert torch.equal(x_all, TF.normalize(TF.to_dtype(images, torch.float32, scale=True), [0.5] * 3, [0.25] * 3))


def test_cifar_datamodule_gpu_resident_matches_dataloader(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    kwargs = dict(root=str(tmp_path), num_classes=10, verify_checksums=False, batch_size=8, num_workers=0)
    reference, resident = CIFAR10DataModule(**kwargs), CIFAR10DataModule(**kwargs, gpu_resident=True)
    for dm in (reference, resident):
        dm.setup("fit")
    assert isinstance(resident.train_dataloader(), DeviceBatchLoader)
    assert isinstance(reference.val_dataloader(), DataLoader)
    for ours, theirs in zip(resident.val_dataloader(), reference.val_dataloader(), strict=True):
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    train = resident.train_dataloader()
    assert len(train) == len(reference.train_dataloader())
    images, labels = next(iter(train))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert set(labels.tolist()) <= set(range(10))


def test_lightning_fit_with_gpu_resident_data(tmp_path: Path) -> None:
    dm = SyntheticDataModule(
        image_size=16, num_train_samples=64, num_test_samples=16, batch_size=16, gpu_resident=True, noise=0.5
    )
    model = ImageClassifier("resattn_tiny_cifar", num_classes=10, optimizer={"name": "sgd", "lr": 0.05})
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 4  # two epochs of two batches
    assert trainer.train_dataloader.sampler.epoch == 1  # Lightning called set_epoch on our loader
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
