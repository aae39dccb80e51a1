"""The attention module (docs/paper.md §1.1, §1.5).

::

    a = pre(x)            # p units
    T = trunk(a)          # t units
    M = mask(a)           # soft mask branch, same shape as T
    F = (1 + M) * T       # attention residual learning (ARL); naive attention learning: F = M * T
    y = post(F)           # p units
"""

from __future__ import annotations

import torch
from torch import nn

from resattn.mask import SoftMaskBranch
from resattn.units import make_units


class AttentionModule(nn.Module):
    """One attention module; ``num_pre_units`` = p, ``num_trunk_units`` = t, ``units_per_level`` = r.

    The mask output is produced by the ``mask`` submodule, so forward hooks on it (see
    :meth:`resattn.net.ResidualAttentionNet.capture_masks` and ``replace_masks``) see, or replace, every mask
    without changing ``forward``.
    """

    def __init__(
        self,
        unit_type: str,
        channels: int,
        num_pools: int,
        num_pre_units: int = 1,
        num_trunk_units: int = 2,
        units_per_level: int = 1,
        mask_type: str = "mixed",
        mask_structure: str = "hourglass",
        local_mask_units: int | None = None,
        attention_residual: bool = True,
    ) -> None:
        super().__init__()
        self.attention_residual = attention_residual
        self.pre = make_units(unit_type, channels, num_pre_units)
        self.trunk = make_units(unit_type, channels, num_trunk_units)
        self.mask = SoftMaskBranch(
            unit_type,
            channels,
            num_pools,
            units_per_level=units_per_level,
            mask_type=mask_type,
            mask_structure=mask_structure,
            local_mask_units=local_mask_units,
        )
        self.post = make_units(unit_type, channels, num_pre_units)

    def extra_repr(self) -> str:
        return f"attention_residual={self.attention_residual}"

    def fuse(self, trunk: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ARL ``T * M + T`` (the prototxt's PROD then SUM) or NAL ``T * M``."""
        attended = trunk * mask
        # In place: the product's backward needs its inputs, not its output.
        return attended.add_(trunk) if self.attention_residual else attended

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_mask(x)[0]

    def forward_with_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The module's output and its soft mask M (for ``forward_intermediates(..., return_masks=True)``)."""
        shared = self.pre(x)
        trunk = self.trunk(shared)
        mask = self.mask(shared)
        return self.post(self.fuse(trunk, mask)), mask
