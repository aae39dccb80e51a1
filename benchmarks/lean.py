"""LightningModules of the loop benchmark: the framework alone, and ImageClassifier with the leaner training step
that BENCHMARKS.md recommends for ``lightning_modules/classifier.py``."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules import ImageClassifier
from lightning_modules.classifier import NonFiniteLossError
from lightning_modules.optim import build_optimizer


class MinimalModule(L.LightningModule):
    """Only the loss: what Lightning's loop costs with nothing else in ``training_step``."""

    def __init__(self, net: nn.Module, optimizer: dict[str, Any], channels_last: bool = False) -> None:
        super().__init__()
        self.net = net
        self.optimizer_settings = optimizer
        self.channels_last = channels_last

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return F.cross_entropy(self.net(images), targets)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.net, self.optimizer_settings)


class LeanClassifier(ImageClassifier):
    """ImageClassifier whose training step never waits for the device (no host sync per step).

    Three changes, each removing a per-step host-device synchronisation (free on a CPU, where it is only
    Python work, but on a GPU each one stops the host from queueing the next kernels ahead of the device):

    1. training metrics built with ``validate_args=False`` (torchmetrics otherwise checks the targets with
       ``torch.unique`` and a Python ``if`` every step) and the training loss mean with
       ``nan_strategy="disable"`` (the default ``"warn"`` tests ``isnan(...).any()`` in Python every step);
    2. the non-finite loss check accumulates an on-device flag and raises at the next logging step or
       before any checkpoint is written (instead of ``if not torch.isfinite(loss)`` every step), so a
       checkpoint on disk still never holds the weights of a non-finite step;
    3. ``train/loss_step`` is logged on the Trainer's logging steps only (``log_every_n_steps``), which are
       the only steps whose value reaches the loggers anyway.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        k = self.hparams.num_classes
        self.metrics["train_acc"] = MetricCollection(
            {
                "acc1": MulticlassAccuracy(k, top_k=1, average="micro", validate_args=False),
                "acc5": MulticlassAccuracy(k, top_k=min(5, k), average="micro", validate_args=False),
            },
            prefix="train/",
        )
        self.losses["train_loss"] = MeanMetric(nan_strategy="disable")
        self._nonfinite: torch.Tensor | None = None

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        if self.mixup is not None:
            images, soft_targets = self.mixup(images, targets)
            logits = self(images)
            loss = self.criterion(logits, soft_targets)
        else:
            logits = self(images)
            loss = self.criterion(logits, targets)
        self._update_metrics("train", logits, targets, loss)
        bad = ~torch.isfinite(loss.detach())
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:
            self.check_finite()
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if any training loss since the last check was NaN or infinite."""
        if self._nonfinite is not None and bool(self._nonfinite):
            raise NonFiniteLossError(
                f"a training loss was not finite between the last check and global step {self.global_step}; "
                "stopping. Lower the learning rate, enable gradient clipping (trainer.gradient_clip_val) or check "
                "the data; the last good checkpoint is kept as last.ckpt"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()
        super().on_save_checkpoint(checkpoint)
