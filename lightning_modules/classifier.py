"""ImageClassifier: the LightningModule that trains any resattn (or timm) network by name.

It builds the network itself with ``timm.create_model(arch, ...)`` from plain hyper-parameters, so
``ImageClassifier.load_from_checkpoint(path)`` restores it with no Hydra and no config files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

import resattn
from lightning_modules.optim import build_optimizer, build_scheduler
from lightning_modules.resume import close_finished_epoch

STAGES = ("train", "val", "test")


def build_network(
    arch: str, num_classes: int, in_chans: int, model_kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    """``timm.create_model`` with a clear error for unknown names (resattn variants are listed)."""
    if not timm.is_model(arch):
        raise ValueError(
            f"unknown architecture {arch!r}; resattn variants: {', '.join(resattn.list_variants())} "
            "(any other timm model name works too)"
        )
    return timm.create_model(arch, num_classes=num_classes, in_chans=in_chans, **dict(model_kwargs or {}))


def _accuracy_metrics(num_classes: int) -> MetricCollection:
    return MetricCollection(
        {
            "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro"),
        }
    )


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss is NaN or infinite; the last good checkpoint is kept."""


class ImageClassifier(L.LightningModule):
    """Cross-entropy image classification with top-1/top-5 accuracy for train/val/test.

    Args:
        arch: timm model name, e.g. ``resattn92_cifar``.
        num_classes: classifier outputs.
        in_chans: input channels.
        model_kwargs: extra keyword arguments for the network (``mask_type``, ``attention_residual``...).
        variant_overrides: :class:`resattn.VariantSpec` fields to change (``units_per_level``...).
        optimizer: plain dict, see :func:`lightning_modules.optim.build_optimizer`.
        scheduler: plain dict, see :func:`lightning_modules.optim.build_scheduler`.
        label_smoothing: cross-entropy label smoothing (0 in the paper).
        channels_last: run the network in channels-last memory format.
        compile: compile the network with ``torch.compile`` (in place, so checkpoint keys do not change).
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        in_chans: int = 3,
        model_kwargs: dict[str, Any] | None = None,
        variant_overrides: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_network(arch, num_classes, in_chans, {**(model_kwargs or {}), **(variant_overrides or {})})
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net.compile()
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # Keyed "<stage>_..." because a ModuleDict key "train" would shadow nn.Module.train.
        self.metrics = nn.ModuleDict({f"{s}_acc": _accuracy_metrics(num_classes).clone(prefix=f"{s}/") for s in STAGES})
        self.losses = nn.ModuleDict({f"{s}_loss": MeanMetric() for s in STAGES})
        self.val_acc1_best = MaxMetric()
        self.test_per_class = MulticlassAccuracy(num_classes, average="none")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = batch
        logits = self(images)
        loss = self.criterion(logits, targets) if stage == "train" else F.cross_entropy(logits, targets)
        self.metrics[f"{stage}_acc"].update(logits, targets)
        self.losses[f"{stage}_loss"].update(loss.detach(), weight=targets.numel())
        return loss, logits

    def _log_epoch(self, stage: str) -> None:
        self.log(f"{stage}/loss", self.losses[f"{stage}_loss"], on_step=False, on_epoch=True, prog_bar=stage != "train")
        self.log_dict(self.metrics[f"{stage}_acc"], on_step=False, on_epoch=True, prog_bar=stage == "val")

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self._shared_step(batch, "train")
        if not torch.isfinite(loss):
            # Raised before backward and the optimiser step, so the weights stay finite and the last
            # checkpoint on disk (last.ckpt) stays the last good one.
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at global step {self.global_step}; stopping before the "
                "update. Lower the learning rate, enable gradient clipping (trainer.gradient_clip_val) or "
                "check the data; the last good checkpoint is kept as last.ckpt"
            )
        self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        acc1 = self.metrics["val_acc"]["acc1"].compute()
        self._log_epoch("val")
        if not self.trainer.sanity_checking:
            self.val_acc1_best.update(acc1)
            self.log("val/acc1_best", self.val_acc1_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        _, logits = self._shared_step(batch, "test")
        self.test_per_class.update(logits, batch[1])
        self.test_confusion.update(logits, batch[1])

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def on_test_epoch_start(self) -> None:
        self.test_per_class.reset()
        self.test_confusion.reset()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Called before the Trainer restores its loops from the same dict (not attached when loaded alone).
        if self._trainer is not None and self._trainer.max_steps != -1:
            close_finished_epoch(checkpoint)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.net, self.hparams.optimizer or {"name": "sgd", "lr": 0.1})
        total_steps = int(self.trainer.estimated_stepping_batches)  # also sizes the train dataloader
        steps_per_epoch = math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches)
        scheduler = build_scheduler(optimizer, self.hparams.scheduler, total_steps, steps_per_epoch)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
