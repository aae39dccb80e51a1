"""Residual units, the building blocks of trunk, mask and standalone layers (docs/paper.md §3.1), and the plain
(non-residual) unit of the plain CNN baseline.

Every unit maps ``(N, in_channels, H, W) -> (N, out_channels, H/stride, W/stride)`` and takes the same
constructor arguments, so a unit type is data: a key of :data:`UNIT_TYPES`.

``preactivation`` tells the network how the unit expects its input: pre-activation units consume raw
residual sums (BN-ReLU happens inside, at the start of the next unit), post-activation units consume
post-ReLU tensors. The network uses it to choose the stem, the mask tail and the final normalisation.
``trunk_layers`` is the number of weighted layers a unit adds to the trunk depth (``VariantSpec.depth``).
"""

from __future__ import annotations

import torch
from torch import nn


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


class BNReLU(nn.Sequential):
    """BatchNorm followed by an in-place ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck unit of Attention-56/92 (docs/paper.md §3.1).

    ``z = ReLU(BN(x))``; residual ``1x1(C/4) -> BN-ReLU -> 3x3(C/4, stride) -> BN-ReLU -> 1x1(C)``;
    shortcut is ``x`` or a strided 1x1 projection of ``z`` (the pre-activated input), no conv biases.
    """

    preactivation = True
    trunk_layers = 3

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        mid = out_channels // 4
        self.preact = BNReLU(in_channels)
        self.conv1 = conv1x1(in_channels, mid)
        self.act1 = BNReLU(mid)
        self.conv2 = conv3x3(mid, mid, stride)
        self.act2 = BNReLU(mid)
        self.conv3 = conv1x1(mid, out_channels)
        needs_projection = in_channels != out_channels or stride != 1
        self.shortcut = conv1x1(in_channels, out_channels, stride) if needs_projection else None

    def zero_init_last(self) -> None:
        """Start the residual branch at zero so the unit begins as its shortcut."""
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.preact(x)
        shortcut = x if self.shortcut is None else self.shortcut(z)
        h = self.conv3(self.act2(self.conv2(self.act1(self.conv1(z)))))
        # In place: a convolution's backward does not need its output, so no activation-sized copy is made.
        return h.add_(shortcut)


class ResNeXtBottleneck(nn.Module):
    """Post-activation ResNeXt unit of AttentionNeXt (docs/paper.md §3.1), 32x4d style.

    ``1x1(C/2) -> BN-ReLU -> 3x3(C/2, groups=32, stride) -> BN-ReLU -> 1x1(C) -> BN``, shortcut ``x`` or
    ``1x1(stride) -> BN``, output ``ReLU(h + shortcut)``.
    """

    preactivation = False
    trunk_layers = 3

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, cardinality: int = 32) -> None:
        super().__init__()
        mid = out_channels // 2
        groups = min(cardinality, mid)
        if mid % groups:
            raise ValueError(
                f"ResNeXt unit: inner width {mid} (= out_channels/2) is not divisible by cardinality {groups}"
            )
        self.conv1 = conv1x1(in_channels, mid)
        self.act1 = BNReLU(mid)
        self.conv2 = conv3x3(mid, mid, stride, groups=groups)
        self.act2 = BNReLU(mid)
        self.conv3 = conv1x1(mid, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        needs_projection = in_channels != out_channels or stride != 1
        self.shortcut = (
            nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
            if needs_projection
            else None
        )
        self.act_out = nn.ReLU(inplace=True)

    def zero_init_last(self) -> None:
        """Zero the last BN's scale so the unit begins as its shortcut."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        h = self.bn3(self.conv3(self.act2(self.conv2(self.act1(self.conv1(x))))))
        return self.act_out(h.add_(shortcut))  # in place: BN's backward does not need its output


class InceptionResidualUnit(nn.Module):
    """Simplified pre-activation Inception-ResNet unit for AttentionInception-56.

    The paper gives no definition (docs/paper.md §3.4, §7.11), only that the Inception block was simplified
    to keep params and FLOPs at Attention-56's scale. Our choice, with ``w = C/8``::

        z   = ReLU(BN(x))
        red = BN-ReLU(1x1(w)(z))                          # one 1x1 reduction shared by two branches
        b1  = 1x1(w, stride)(z)
        b3  = 3x3(w, stride)(red)
        b5  = 3x3(w)(BN-ReLU(3x3(w, stride)(red)))        # factorised 5x5
        out = 1x1(C)(BN-ReLU(concat(b1, b3, b5))) + shortcut

    Three receptive fields (1, 3, 5) as in Inception-ResNet-A; sharing the reduction is the
    simplification that brings the weights to ``~1.05 C^2``, the bottleneck's ``1.06 C^2``, so the
    network keeps Attention-56's parameter and FLOP budget. The shortcut is the identity or a strided
    1x1 projection of ``z``, as in :class:`PreActBottleneck`.
    """

    preactivation = True
    trunk_layers = 3

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        width = max(out_channels // 8, 1)
        self.preact = BNReLU(in_channels)
        self.reduce = nn.Sequential(conv1x1(in_channels, width), BNReLU(width))
        self.branch1 = conv1x1(in_channels, width, stride)
        self.branch3 = conv3x3(width, width, stride)
        self.branch5 = nn.Sequential(conv3x3(width, width, stride), BNReLU(width), conv3x3(width, width))
        self.mix_act = BNReLU(3 * width)
        self.mix = conv1x1(3 * width, out_channels)
        needs_projection = in_channels != out_channels or stride != 1
        self.shortcut = conv1x1(in_channels, out_channels, stride) if needs_projection else None

    def zero_init_last(self) -> None:
        """Start the residual branch at zero so the unit begins as its shortcut."""
        nn.init.zeros_(self.mix.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.preact(x)
        shortcut = x if self.shortcut is None else self.shortcut(z)
        reduced = self.reduce(z)
        branches = torch.cat([self.branch1(z), self.branch3(reduced), self.branch5(reduced)], dim=1)
        return self.mix(self.mix_act(branches)).add_(shortcut)  # in place on a convolution's output


class PlainUnit(nn.Module):
    """One conv-BN-ReLU without a shortcut, the unit of the plain CNN baseline (no residual, no attention).

    ``3x3(C) -> BN-ReLU``; a stride ``s > 1`` is a ``s x s`` max-pool (ceil mode: the output side is the strided
    3x3 convolution's, ``(H - 1) // s + 1``) before the conv, as between the stages of a VGG-style network.
    """

    preactivation = False
    trunk_layers = 1

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.conv = conv3x3(in_channels, out_channels)
        self.act = BNReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(self.pool(x)))


UNIT_TYPES: dict[str, type[nn.Module]] = {
    "preact": PreActBottleneck,
    "resnext": ResNeXtBottleneck,
    "inception": InceptionResidualUnit,
    "plain": PlainUnit,
}


def unit_class(unit_type: str) -> type[nn.Module]:
    """Return the unit class registered under ``unit_type``; unknown names list the accepted ones."""
    try:
        return UNIT_TYPES[unit_type]
    except KeyError:
        raise ValueError(f"unknown unit_type {unit_type!r}; accepted: {sorted(UNIT_TYPES)}") from None


def make_units(unit_type: str, channels: int, count: int) -> nn.Sequential:
    """``count`` units of ``channels -> channels`` at stride 1 (trunk, mask and pre/post units)."""
    cls = unit_class(unit_type)
    return nn.Sequential(*(cls(channels, channels) for _ in range(count)))
