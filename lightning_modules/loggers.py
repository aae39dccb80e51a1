"""Logger classes for the configs in ``conf/logger/``."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import loggers


class WandbLogger(loggers.WandbLogger):
    """Lightning's W&B logger, minus the ``anonymous=None`` it always hands to ``wandb.init``: wandb (0.19 and
    newer) prints a deprecation warning for that setting on every run, whatever its value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
