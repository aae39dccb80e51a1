"""Defaults that fit the run a user asks for: a short run with the default recipe is annealed by the end, so that
what it evaluates (eval-mode batch norm, the final weights) is close to what it trained."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import compose_config, quiet_trainer
from hydra.utils import instantiate

import resattn  # noqa: F401  (registers the variants with timm)

STEPS = 100
# The default data config of each family, small: Fashion-MNIST's real files (Debian's dataset-fashion-mnist) for the
# CIFAR layout, ...
DATA = {
    "cifar": ["data=fashion_mnist", "data.max_eval_samples=1000", "data.num_workers=0"],
    "imagenet": ["data=synthetic", "data.model_family=imagenet", "data.num_train_samples=640", "data.noise=1.5"],
}


def short_run(tmp_path: Path, family: str, extra: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """(metrics at the end of training, validation metrics) of a short default run of the tiny network of
    ``family``."""
    overrides = ["model=tiny", *DATA[family], *extra]
    cfg = compose_config("train", overrides, tmp_path)
    data = instantiate(cfg.data)
    module = instantiate(cfg.module)
    trainer = quiet_trainer(tmp_path, max_steps=STEPS, max_epochs=-1, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    trained = {k: float(v) for k, v in trainer.callback_metrics.items()}
    (validated,) = quiet_trainer(tmp_path).validate(module, datamodule=data, verbose=False)
    return trained, validated


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cifar", "imagenet"])
def test_a_short_default_run_evaluates_close_to_its_training_loss(family: str, tmp_path: Path) -> None:
    """With the paper's schedule held at lr 0.1 for 0.4 of 160k steps, a 100-step Fashion-MNIST run ended at a
    training loss of 0.94 but a validation loss of 1.85 (30 % top-1); annealed over its own length: 1.36 and 1.41."""
    trained, validated = short_run(tmp_path, family, [])
    assert validated["val/loss"] < trained["train/loss_step"] + 0.3, (trained, validated)
    assert validated["val/acc1"] > 0.4
