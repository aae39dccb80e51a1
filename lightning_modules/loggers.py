"""Logger classes for the configs in ``conf/logger/``."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch import loggers

# Environment variables through which a user sets how much W&B itself prints.
WANDB_OUTPUT_SETTINGS = ("WANDB_QUIET", "WANDB_SILENT")


class WandbLogger(loggers.WandbLogger):
    """Lightning's W&B logger, minus the ``anonymous=None`` it always hands to ``wandb.init``: wandb (0.19 and
    newer) prints a deprecation warning for that setting on every run, whatever its value.

    W&B's own header and footer (its version, where an offline run is saved, and a summary of the metrics that the
    run's final report already gives) are left out: offline runs print nothing of W&B's (``silent``), online ones the
    run's URL (``quiet``). ``WANDB_QUIET=false`` (or a ``settings`` argument) shows them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        if "settings" not in self._wandb_init and not any(name in os.environ for name in WANDB_OUTPUT_SETTINGS):
            offline = self._offline or os.environ.get("WANDB_MODE") in ("offline", "dryrun")
            self._wandb_init["settings"] = {"silent": True} if offline else {"quiet": True}
