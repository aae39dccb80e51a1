"""Soft mask branch and mask activations (docs/paper.md §1.4, §2, Table 4).

The hourglass mask follows the authors' prototxt: ``num_pools`` times max-pool (3x3, stride 2, Caffe's
ceil mode, no padding) followed by residual units, a skip unit at every intermediate resolution, bilinear
up-sampling (``align_corners=True``) *to the size of the stored bottom-up tensor* plus that skip, and a
final up-sampling to the trunk's size. The skip is the only thing added: neither the trunk output nor
the encoder feature is added a second time (docs/paper.md §7.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resattn.units import BNReLU, conv1x1, make_units, unit_class

MASK_TYPES = ("mixed", "channel", "spatial")
MASK_STRUCTURES = ("hourglass", "local")


def upsample_to(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to ``reference``'s spatial size (Caffe Interp: align-corners)."""
    return F.interpolate(x, size=reference.shape[-2:], mode="bilinear", align_corners=True)


def mask_pool() -> nn.MaxPool2d:
    """The mask's down-sampling: 3x3, stride 2, pad 0, ceil mode, as in the authors' Caffe."""
    return nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)


def pooled_size(size: int) -> int:
    """Spatial size after :func:`mask_pool` (PyTorch's ceil-mode rule for pad 0)."""
    out = -(-(size - 3) // 2) + 1
    if (out - 1) * 2 >= size:
        out -= 1
    return out


class MaskActivation(nn.Module):
    """The three attention types f1/f2/f3 of docs/paper.md §2, applied to the mask's pre-activation.

    - ``mixed`` (f1): element-wise sigmoid, attention over channels and space, values in (0, 1).
    - ``channel`` (f2): L2-normalise the C-vector at each position, values in [-1, 1].
    - ``spatial`` (f3): standardise each channel map by its own per-sample mean and std over H x W,
      then sigmoid.

    ``eps`` is added under the square roots: ``x / sqrt(|x|^2 + eps)`` and ``(x - mean) / sqrt(var + eps)``.

    The mask's *logits* (:meth:`logits`) are what the last squashing step takes: ``M = sigmoid(logits)`` for
    ``mixed`` (the pre-activation itself) and ``spatial`` (the standardised pre-activation, whose spread within a
    channel is 1 by construction); for ``channel``, which has no sigmoid, the pre-activation itself, with
    ``M = logits / |logits|`` over channels.
    """

    def __init__(self, mask_type: str = "mixed", eps: float = 1e-5) -> None:
        super().__init__()
        if mask_type not in MASK_TYPES:
            raise ValueError(f"unknown mask_type {mask_type!r}; accepted: {list(MASK_TYPES)}")
        self.mask_type = mask_type
        self.eps = eps

    def extra_repr(self) -> str:
        return f"mask_type={self.mask_type!r}, eps={self.eps}"

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The mask's logits for the pre-activation ``x``: how far, before squashing, the mask departs from flat."""
        if self.mask_type == "spatial":
            var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
            return (x - mean) * torch.rsqrt(var + self.eps)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask_type == "channel":
            # eps inside the square root keeps the gradient bounded where x is ~0 everywhere
            return x * torch.rsqrt(x.pow(2).sum(dim=1, keepdim=True) + self.eps)
        return torch.sigmoid(self.logits(x))


class MaskTail(nn.Sequential):
    """The two 1x1 convolutions before the mask activation (docs/paper.md §1.4, §3.1).

    Pre-activation networks: BN-ReLU-1x1-BN-ReLU-1x1. Post-activation (ResNeXt) networks, whose
    features are already post-ReLU, drop the first BN-ReLU: 1x1-BN-ReLU-1x1. Both convs are C->C,
    without bias, and no BN follows the last one.
    """

    def __init__(self, channels: int, preactivation: bool) -> None:
        layers: list[nn.Module] = [BNReLU(channels)] if preactivation else []
        layers += [conv1x1(channels, channels), BNReLU(channels), conv1x1(channels, channels)]
        super().__init__(*layers)


class HourglassMask(nn.Module):
    """Bottom-up/top-down soft mask trunk with skips (docs/paper.md §1.4); returns features at ``x``'s size.

    Level ``i`` (0-based, ``i < num_pools``): pool, then ``units_per_level`` units (r), or twice that at
    the bottom level (2r). Every level above the bottom keeps a skip unit; on the way up the deeper
    feature is resized to that level's size, the skip is added, and ``units_per_level`` units follow.
    """

    def __init__(self, unit_type: str, channels: int, num_pools: int, units_per_level: int = 1) -> None:
        super().__init__()
        if num_pools < 1:
            raise ValueError(f"an hourglass mask needs num_pools >= 1, got {num_pools}")
        self.pool = mask_pool()
        self.down = nn.ModuleList(
            make_units(unit_type, channels, units_per_level * (2 if level == num_pools - 1 else 1))
            for level in range(num_pools)
        )
        self.skips = nn.ModuleList(make_units(unit_type, channels, 1) for _ in range(num_pools - 1))
        self.up = nn.ModuleList(make_units(unit_type, channels, units_per_level) for _ in range(num_pools - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bottom_up: list[torch.Tensor] = []
        h = x
        for down in self.down:
            h = down(self.pool(h))
            bottom_up.append(h)
        for level in range(len(self.up) - 1, -1, -1):
            encoder = bottom_up[level]
            # In place on the up-sampled tensor: the up-sampling's backward does not need its output.
            if torch.jit.is_scripting():
                # TorchScript indexes a ModuleList only with a constant: unrolled over the levels, one matches.
                for i, (up, skip) in enumerate(zip(self.up, self.skips)):  # noqa: B905 (TorchScript: no strict)
                    if i == level:
                        h = up(upsample_to(h, encoder).add_(skip(encoder)))
            else:
                h = self.up[level](upsample_to(h, encoder).add_(self.skips[level](encoder)))
        return upsample_to(h, x)


class LocalMask(nn.Module):
    """Local-convolution mask of Table 4: residual units at full resolution, no down/up-sampling."""

    def __init__(self, unit_type: str, channels: int, num_units: int) -> None:
        super().__init__()
        if num_units < 1:
            raise ValueError(f"a local mask needs at least one unit, got {num_units}")
        self.units = make_units(unit_type, channels, num_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x)


def hourglass_cost_in_units(num_pools: int, units_per_level: int = 1) -> float:
    """FLOPs of an hourglass mask's units, in units of one full-resolution unit (each pool / 4)."""
    cost = 0.0
    for level in range(num_pools):
        scale = 4.0 ** -(level + 1)
        bottom = level == num_pools - 1
        down_units = units_per_level * (2 if bottom else 1)
        up_and_skip = 0 if bottom else units_per_level + 1
        cost += (down_units + up_and_skip) * scale
    return cost


def flop_matched_local_units(num_pools: int, units_per_level: int = 1) -> int:
    """Units a local mask needs to cost about as much as the hourglass it replaces (Table 4)."""
    return max(1, round(hourglass_cost_in_units(num_pools, units_per_level)))


class SoftMaskBranch(nn.Module):
    """Mask trunk (hourglass or local) + tail + activation: ``M(x)`` with the trunk output's shape."""

    def __init__(
        self,
        unit_type: str,
        channels: int,
        num_pools: int,
        units_per_level: int = 1,
        mask_type: str = "mixed",
        mask_structure: str = "hourglass",
        local_mask_units: int | None = None,
    ) -> None:
        super().__init__()
        if mask_structure == "hourglass":
            self.body: nn.Module = HourglassMask(unit_type, channels, num_pools, units_per_level)
        elif mask_structure == "local":
            count = local_mask_units
            if count is None:
                count = flop_matched_local_units(num_pools, units_per_level)
            self.body = LocalMask(unit_type, channels, count)
        else:
            raise ValueError(f"unknown mask structure {mask_structure!r}; accepted: {list(MASK_STRUCTURES)}")
        self.tail = MaskTail(channels, unit_class(unit_type).preactivation)
        self.activation = MaskActivation(mask_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.tail(self.body(x)))
