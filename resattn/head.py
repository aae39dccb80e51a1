"""The classifier head: global pooling (or none, timm's ``global_pool=""``), dropout, linear classifier."""

import torch
from torch import nn

POOL_TYPES = ("avg", "")


def check_head(global_pool: str, num_classes: int) -> None:
    if global_pool not in POOL_TYPES:
        raise ValueError(f"unsupported global_pool {global_pool!r}; accepted: {list(POOL_TYPES)}")
    if not global_pool and num_classes > 0:
        raise ValueError(
            f"global_pool='' keeps the feature maps unpooled, so it needs num_classes=0 (got {num_classes})"
        )


class ClassifierHead(nn.Module):
    """Global average pooling, dropout, linear classifier.

    ``num_classes=0`` gives the pooled features; ``global_pool=""`` (with ``num_classes=0``) the unpooled maps.
    """

    def __init__(self, num_features: int, num_classes: int, drop_rate: float = 0.0, global_pool: str = "avg") -> None:
        super().__init__()
        check_head(global_pool, num_classes)
        self.num_features = num_features
        self.global_pool = global_pool
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, global_pool: str | None, like: torch.Tensor) -> None:
        """A new classifier, on ``like``'s device and dtype and in the head's train/eval mode, so that a model
        moved or put in eval mode stays so. ``global_pool=None`` keeps the pooling, or brings average pooling
        back when a classifier is to follow unpooled maps."""
        if global_pool is None:
            global_pool = "avg" if num_classes > 0 and not self.global_pool else self.global_pool
        check_head(global_pool, num_classes)
        self.global_pool = global_pool
        self.fc = nn.Identity()
        if num_classes > 0:
            self.fc = nn.Linear(self.num_features, num_classes, device=like.device, dtype=like.dtype)
            nn.init.normal_(self.fc.weight, std=0.01)
            nn.init.zeros_(self.fc.bias)
        self.fc.train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.drop(x)
        return x if pre_logits else self.fc(x)
