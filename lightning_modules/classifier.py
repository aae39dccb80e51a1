"""ImageClassifier: the LightningModule that trains any resattn (or timm) network by name.

It builds the network itself with ``timm.create_model(arch, ...)`` from plain hyper-parameters, so
``ImageClassifier.load_from_checkpoint(path)`` restores it with no Hydra and no config files.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.utils import ModelEmaV3
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lightning_modules.optim import build_optimizer, build_scheduler
from lightning_modules.resume import close_finished_epoch, rng_states, set_rng_states
from resattn.checkpoints import build_network

STAGES = ("train", "val", "test")
EVAL_STAGES = ("val", "test")
MIXUP_DEFAULTS = {"mixup_alpha": 0.0, "cutmix_alpha": 0.0, "prob": 1.0, "switch_prob": 0.5}


def _accuracy_metrics(num_classes: int) -> MetricCollection:
    """Top-1/top-5 accuracy without torchmetrics' argument checks, which read the targets back to the host
    every step (``torch.unique``); the cross-entropy beside them already rejects out-of-range targets."""
    return MetricCollection(
        {
            "acc1": MulticlassAccuracy(num_classes, top_k=1, average="micro", validate_args=False),
            "acc5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes), average="micro", validate_args=False),
        }
    )


def _mean_loss() -> MeanMetric:
    """Mean loss that keeps a NaN (the default ``nan_strategy`` drops it after a host-side ``isnan().any()``)."""
    return MeanMetric(nan_strategy="disable")


def _build_mixup(settings: dict[str, float] | None, label_smoothing: float, num_classes: int) -> Mixup | None:
    """timm's batch Mixup/CutMix from plain settings, or None while both alphas are 0."""
    unknown = sorted(set(settings or {}) - set(MIXUP_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown mixup settings {unknown}; accepted: {sorted(MIXUP_DEFAULTS)}")
    cfg = {**MIXUP_DEFAULTS, **(settings or {})}
    if cfg["mixup_alpha"] <= 0 and cfg["cutmix_alpha"] <= 0:
        return None
    return Mixup(**cfg, label_smoothing=label_smoothing, num_classes=num_classes)


class NonFiniteLossError(RuntimeError):
    """Raised when a training loss was NaN or infinite; no checkpoint is written after that step."""


class ImageClassifier(L.LightningModule):
    """Cross-entropy image classification with top-1/top-5 accuracy for train/val/test.

    Args:
        arch: timm model name, e.g. ``resattn92_cifar``.
        num_classes: classifier outputs.
        in_chans: input channels.
        net: the network's other keyword arguments, passed to ``timm.create_model`` unchanged: its options
            (``mask_type``, ``attention_residual``...) and :class:`resattn.VariantSpec` fields (``units_per_level``...).
        optimizer: plain dict, see :func:`lightning_modules.optim.build_optimizer`.
        scheduler: plain dict, see :func:`lightning_modules.optim.build_scheduler`.
        label_smoothing: cross-entropy label smoothing (0 in the paper).
        channels_last: run the network in channels-last memory format.
        compile: compile the network with ``torch.compile`` (in place, so checkpoint keys do not change).
        mixup: timm ``Mixup`` settings (``mixup_alpha``, ``cutmix_alpha``, ``prob``, ``switch_prob``); off
            while both alphas are 0. Train accuracy is measured against the unmixed labels.
        ema_decay: keep an exponential moving average of the weights (e.g. 0.9999), evaluated separately
            as ``{val,test}/ema_{loss,acc1,acc5}``; None: off (as in the paper).
    """

    def __init__(
        self,
        arch: str,
        num_classes: int,
        in_chans: int = 3,
        net: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = True,
        compile: bool = False,
        mixup: dict[str, float] | None = None,
        ema_decay: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = build_network(arch, num_classes, in_chans, net)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.ema = ModelEmaV3(self.net, decay=ema_decay) if ema_decay else None
        if compile:
            self.net.compile()
        self.mixup = _build_mixup(mixup, label_smoothing, num_classes)
        self.criterion = (
            SoftTargetCrossEntropy() if self.mixup else nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        )
        # Keyed "<stage>_..." because a ModuleDict key "train" would shadow nn.Module.train.
        self.metrics = nn.ModuleDict({f"{s}_acc": _accuracy_metrics(num_classes).clone(prefix=f"{s}/") for s in STAGES})
        self.losses = nn.ModuleDict({f"{s}_loss": _mean_loss() for s in STAGES})
        if self.ema is not None:
            for s in EVAL_STAGES:
                self.metrics[f"{s}_ema_acc"] = _accuracy_metrics(num_classes).clone(prefix=f"{s}/ema_")
                self.losses[f"{s}_ema_loss"] = _mean_loss()
        self.val_acc1_best = MaxMetric()
        self.val_acc1_best.persistent(True)  # saved in checkpoints, so a resumed run keeps its best
        self.test_per_class = MulticlassAccuracy(num_classes, average="none")
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self._first_nonfinite: torch.Tensor | None = None  # see _watch_loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _update_metrics(self, key: str, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        self.metrics[f"{key}_acc"].update(logits, targets)
        self.losses[f"{key}_loss"].update(loss.detach(), weight=targets.numel())

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        self._update_metrics(stage, logits, targets, F.cross_entropy(logits, targets))
        if self.ema is not None:
            ema_logits = self.ema.module(images)
            self._update_metrics(f"{stage}_ema", ema_logits, targets, F.cross_entropy(ema_logits, targets))
        return logits

    def _log_epoch(self, stage: str) -> None:
        """Epoch metrics ``{stage}/{loss,acc1,acc5}`` (and ``{stage}/ema_...`` with EMA weights)."""
        keys = [(stage, f"{stage}/")]
        if self.ema is not None and stage in EVAL_STAGES:
            keys.append((f"{stage}_ema", f"{stage}/ema_"))
        for key, prefix in keys:
            self.log(f"{prefix}loss", self.losses[f"{key}_loss"], on_step=False, on_epoch=True, prog_bar=key == "val")
            self.log_dict(self.metrics[f"{key}_acc"], on_step=False, on_epoch=True, prog_bar=key == "val")

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
        self._watch_loss(loss)
        if (self.global_step + 1) % max(1, self.trainer.log_every_n_steps) == 0:
            # the only steps whose values reach the loggers: the host reads the device here, not every step
            self.check_finite()
            self.log("train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def _watch_loss(self, loss: torch.Tensor) -> None:
        """Remember, on the device, the global step of the first non-finite loss (-1 while there is none).

        Testing the loss on the host every step would stop a GPU's queue once per step; the flag is read by
        :meth:`check_finite` on logging steps, at the end of every epoch and before every checkpoint.
        """
        step = torch.full((), self.global_step, dtype=torch.long, device=loss.device)
        first = torch.full_like(step, -1) if self._first_nonfinite is None else self._first_nonfinite
        self._first_nonfinite = torch.where((first < 0) & ~torch.isfinite(loss.detach()), step, first)

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if a training loss of this fit was NaN or infinite, on any rank.

        Under DDP every rank calls this at the same points and takes the earliest step over all ranks, so
        they stop together instead of leaving the others waiting in the next all-reduce.
        """
        none = torch.iinfo(torch.long).max
        first = torch.full((), none, dtype=torch.long, device=self.device)
        if self._first_nonfinite is not None:
            first = torch.where(self._first_nonfinite >= 0, self._first_nonfinite, first)
        if self._trainer is not None:
            first = self.trainer.strategy.reduce(first, reduce_op="min")
        first = int(first)
        if first != none:
            raise NonFiniteLossError(
                f"the training loss was not finite at global step {first} (found at step {self.global_step}); "
                "stopping without saving the weights of those steps: the checkpoints on disk, last.ckpt "
                "included, are from before it. Lower the learning rate, enable gradient clipping "
                "(trainer.gradient_clip_val) or check the data, then rerun the command to resume from last.ckpt"
            )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.net, step=self.global_step)

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        self._log_epoch("train")

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        acc1 = self.metrics["val_acc"]["acc1"].compute()
        self._log_epoch("val")
        if not self.trainer.sanity_checking:
            self.val_acc1_best.update(acc1)
            self.log("val/acc1_best", self.val_acc1_best.compute(), sync_dist=True, prog_bar=True)

    def best_val_acc1(self) -> float | None:
        """The best validation top-1 of this training so far (restored from checkpoints), None before any."""
        best = float(self.val_acc1_best.max_value)
        return best if math.isfinite(best) else None

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits = self._eval_step(batch, "test")
        self.test_per_class.update(logits, batch[1])
        self.test_confusion.update(logits, batch[1])

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def on_test_epoch_start(self) -> None:
        self.test_per_class.reset()
        self.test_confusion.reset()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()  # before anything is written: a checkpoint never holds weights of a non-finite step
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Called before the Trainer restores its loops from the same dict (not attached when loaded alone).
        if self._trainer is None:
            return
        if self._trainer.max_steps != -1:
            close_finished_epoch(checkpoint)
        if "rng_states" in checkpoint:  # resume with the random streams of the interrupted run
            set_rng_states(checkpoint["rng_states"])

    def _run_length(self) -> tuple[int, int]:
        """(total optimiser steps, steps per epoch) of this fit, from the Trainer."""
        total = int(self.trainer.estimated_stepping_batches)
        return total, math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.net, self.hparams.optimizer or {"name": "sgd", "lr": 0.1})
        scheduler = build_scheduler(optimizer, self.hparams.scheduler, self._run_length)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
