"""Lightning callbacks: ``last.ckpt`` for crash recovery, the model summary, the progress bar, and attention-mask grids
and statistics during training (docs/paper.md §1.4; ``python train.py callbacks=masks``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import callbacks
from lightning.pytorch.callbacks import Callback, Checkpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

from lightning_modules.figures import save_figure
from lightning_modules.mask_plots import (
    captured_masks_and_logits,
    figure_rgb,
    has_attention_modules,
    heatmaps_from,
    mask_figure,
    stage_module,
    statistics_from,
)
from lightning_modules.stopping import sigterm_stops_at_a_step, stop_requested

log = logging.getLogger(__name__)


class LastCheckpoint(Checkpoint):
    """Keep ``<dirpath>/last.ckpt`` current: every ``every_n_train_steps`` optimiser steps, after each epoch (once
    its validation ran, so ``val/acc1_best`` is included), and at the step where a stop is requested (SIGTERM,
    Ctrl-C), so that a stopped run loses nothing. Always right after an optimiser step: with gradient accumulation,
    never between the micro-batches of one step.

    The file is written beside the target and renamed over it, so a run killed while saving (even with
    SIGKILL) still has a complete last.ckpt, and rerunning the command resumes from it.

    A checkpoint holds every callback's state, so last.ckpt must be written after the other callbacks have
    updated theirs for the same step. Lightning calls checkpoint callbacks (``Checkpoint`` subclasses such as the
    best-checkpoint ``ModelCheckpoint``) after all others and in their list order; this callback moves itself to
    the end of that list in ``setup``, so the best checkpoint it records is the one just chosen, never the
    previous epoch's (which would be ranked against a stale score after a resume).
    """

    FILENAME = "last.ckpt"

    def __init__(self, dirpath: str, every_n_train_steps: int = 500) -> None:
        if every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1, got {every_n_train_steps}")
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = every_n_train_steps
        self._saved_step = -1
        self._step_at_batch_start = -1

    @property
    def path(self) -> Path:
        return self.dirpath / self.FILENAME

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # a new list: Lightning is iterating over the current one to call this hook
        trainer.callbacks = [cb for cb in trainer.callbacks if cb is not self] + [self]

    def save(self, trainer: L.Trainer) -> None:
        """Write last.ckpt now (all ranks take part; rank zero writes)."""
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.global_step == self._saved_step:
            return
        partial = self.path.with_name(f".{self.FILENAME}.partial")
        trainer.save_checkpoint(partial, weights_only=False)  # full state for resuming; ends with a barrier
        if trainer.is_global_zero:
            os.replace(partial, self.path)
        self._saved_step = trainer.global_step

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        sigterm_stops_at_a_step(trainer)  # replaces the handler Lightning registered at the start of fit

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._step_at_batch_start = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self._step_at_batch_start:
            return  # within a gradient accumulation: its gradients so far would be in no checkpoint
        stop = stop_requested(trainer)  # collective under DDP: every rank asks at every step
        if stop or trainer.global_step % self.every_n_train_steps == 0:
            self.save(trainer)
        if stop:  # every rank, at this step, once last.ckpt holds it; training_task.py reports it
            raise SIGTERMException

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_step = -1  # the epoch's end is a state of its own, even at a step just saved
        self.save(trainer)


class ModelSummary(callbacks.ModelSummary):
    """Lightning's model summary, in one line on the console (parameters, size) and as its layer table in the run's
    log only (``file_only``: :class:`lightning_modules.console.FileOnly`). The FLOPs column and total are left out
    where Lightning counted none (it counts them only for a model with an ``example_input_array``)."""

    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        if not total_flops:
            summary_data = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *summary_data
        )
        if not total_flops:
            table = "\n".join(line for line in table.splitlines() if not line.endswith("Total Flops"))
        log.info("Model layers:\n%s", table, extra={"file_only": True})
        log.info(
            "Model: %s parameters (%s trainable, %.1f MB); its layers are listed in the run's log",
            get_human_readable_count(total_parameters),
            get_human_readable_count(trainable_parameters),
            model_size,
        )


class TQDMProgressBar(callbacks.TQDMProgressBar):
    """Lightning's tqdm progress bar, closed when the run ends by an error or a stop, so that what the run says then
    stands on lines of its own and last (an open bar redraws itself when the process exits)."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        bars = (self._train_progress_bar, self._val_progress_bar, self._test_progress_bar, self._predict_progress_bar)
        for bar in bars:
            if bar is not None:
                bar.close()


class AttentionMaskLogger(Callback):
    """Every ``every_n_epochs`` validation epochs, draw every attention module's mask over a fixed batch of the
    first ``num_images`` validation images (the grid of :mod:`lightning_modules.mask_plots`) and log how far the
    masks can move the trunk.

    The grid is saved as ``<save_dir>/epoch<NNNN>-step<NNNNNNN>.png`` (default ``<trainer.default_root_dir>/masks``;
    the step keeps the grids of several validations within an epoch apart) and, with ``log_to_wandb``, logged to every
    W&B logger as the image ``attention_masks``. The masks' statistics over the same batch
    (:class:`~lightning_modules.mask_plots.MaskStatistics`) go to every logger (CSV and W&B alike) as
    ``mask/<statistic>/stage<S>_module<M>`` for each of :attr:`LOGGED_STATISTICS`: ``std`` (std of all values of
    M), ``spatial_std`` (std over positions within a channel), ``logit_std`` and ``logit_spatial_std`` (the same
    for the mask's logits, before the sigmoid squashes them) and ``range`` (5th to 95th percentile of M: how far
    the mask scales the trunk, ``(1 + M) T`` or ``M T``). Curves that show how much the masks can move the trunk
    during training; whether the network uses that is measured offline (``python -m analysis.mask_measures``:
    accuracy with the masks replaced), too costly for every epoch. Only rank 0 draws and logs. Needs a validation
    split; networks without attention modules (the ResNet baselines) are skipped with a warning.
    """

    LOGGED_STATISTICS = ("std", "spatial_std", "logit_std", "logit_spatial_std", "range")

    def __init__(
        self, every_n_epochs: int = 1, num_images: int = 8, save_dir: str | None = None, log_to_wandb: bool = True
    ) -> None:
        super().__init__()
        if every_n_epochs < 1 or num_images < 1:
            raise ValueError(f"every_n_epochs and num_images must be >= 1, got {every_n_epochs} and {num_images}")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.save_dir = save_dir
        self.log_to_wandb = log_to_wandb
        self._batch: tuple[torch.Tensor, list[str]] | None = None
        self._disabled = False

    def fixed_batch(self, trainer: L.Trainer) -> tuple[torch.Tensor, list[str]] | None:
        """The first ``num_images`` validation images (the datamodule's ``val_set``, else the validation loader's
        dataset) and their class names, read once and reused."""
        if self._batch is None:
            dataset = getattr(trainer.datamodule, "val_set", None)  # items as the CPU pipeline serves them
            if dataset is None:
                loaders = trainer.val_dataloaders
                loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
                dataset = getattr(loader, "dataset", None)
            if dataset is None or len(dataset) == 0:
                return None
            items = [dataset[i] for i in range(min(self.num_images, len(dataset)))]
            names = list(getattr(trainer.datamodule, "class_names", None) or [])
            labels = [names[int(y)] if int(y) < len(names) else str(int(y)) for _, y in items]
            self._batch = torch.stack([x for x, _ in items]), labels
        return self._batch

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        if trainer.sanity_checking or not trainer.is_global_zero or self._disabled:
            return
        if (epoch + 1) % self.every_n_epochs:
            return
        net = getattr(pl_module, "net", pl_module)
        if not has_attention_modules(net):
            rank_zero_warn(f"AttentionMaskLogger: {type(net).__name__} has no attention modules; nothing to draw")
            self._disabled = True
            return
        batch = self.fixed_batch(trainer)
        if batch is None:
            return
        images, labels = batch
        images = images.to(pl_module.device)
        masks, logits = captured_masks_and_logits(pl_module, images)  # one forward pass for statistics and grid
        for name, stats in statistics_from(masks, logits).items():
            stage, module = stage_module(name)
            for key in self.LOGGED_STATISTICS:
                pl_module.log(f"mask/{key}/stage{stage}_module{module}", stats[key], rank_zero_only=True)
        heatmaps = heatmaps_from(masks, images.shape[-2:])
        fig = mask_figure(images, heatmaps, labels, f"attention masks M, epoch {epoch}, step {trainer.global_step}")
        if self.log_to_wandb:
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    logger.log_image(
                        key="attention_masks",
                        images=[figure_rgb(fig)],
                        caption=[f"epoch {epoch}"],
                        step=trainer.global_step,
                    )
        folder = Path(self.save_dir) if self.save_dir else Path(trainer.default_root_dir) / "masks"
        save_figure(fig, folder / f"epoch{epoch:04d}-step{trainer.global_step:07d}.png")
