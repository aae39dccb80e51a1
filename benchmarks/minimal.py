"""The LightningModule of the loop benchmark's ``lightning-minimal`` case: the framework alone."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

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
