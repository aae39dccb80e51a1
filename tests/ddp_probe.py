"""A callback for the DDP tests (tests/test_data_at_scale.py, tests/test_multinode.py): which images (of a
``files.write_coded_tree`` set) every training batch of this rank held, per epoch, written to ``<out>/rank<r>.json``
when training ends; ``pause`` seconds of sleep before each batch give a test the time to interrupt a run at a step."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
from files import read_codes
from lightning.pytorch.callbacks import Callback

from input_conventions import IMAGENET_MEAN, IMAGENET_STD


class RecordSamples(Callback):
    def __init__(self, out: str, pause: float = 0.0) -> None:
        self.out = Path(out)
        self.pause = pause
        self.seen: dict[int, list[int]] = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        images, _ = batch
        codes = read_codes(images.detach().float().cpu(), IMAGENET_MEAN, IMAGENET_STD)
        self.seen.setdefault(trainer.current_epoch, []).extend(codes)
        time.sleep(self.pause)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))
