"""``last.ckpt`` for crash recovery, written atomically every N training steps and at every epoch end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint


class LastCheckpoint(Checkpoint):
    """Keep ``<dirpath>/last.ckpt`` current: every ``every_n_train_steps`` optimiser steps and after each
    epoch (once its validation ran, so ``val/acc1_best`` is included).

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

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every_n_train_steps == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_step = -1  # the epoch's end is a state of its own, even at a step just saved
        self.save(trainer)
