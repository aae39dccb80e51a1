"""Residual units (docs/paper.md §3.1): hand-computed forward passes, shortcuts, strides, groups, zero init."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import bn, randomize_bn
from torch import nn

from resattn.units import (
    UNIT_TYPES,
    InceptionResidualUnit,
    PlainUnit,
    PreActBottleneck,
    ResNeXtBottleneck,
    make_units,
    unit_class,
)


def bn_relu(x: torch.Tensor, seq: nn.Sequential) -> torch.Tensor:
    return F.relu(bn(x, seq[0]))


def preact_by_hand(unit: PreActBottleneck, x: torch.Tensor, stride: int, projection: bool) -> torch.Tensor:
    z = bn_relu(x, unit.preact)
    h = F.conv2d(z, unit.conv1.weight)
    h = F.conv2d(bn_relu(h, unit.act1), unit.conv2.weight, stride=stride, padding=1)
    h = F.conv2d(bn_relu(h, unit.act2), unit.conv3.weight)
    shortcut = F.conv2d(z, unit.shortcut.weight, stride=stride) if projection else x
    return h + shortcut


def test_preact_identity_shortcut_matches_hand_computation() -> None:
    unit = randomize_bn(PreActBottleneck(16, 16))
    assert unit.shortcut is None
    assert (unit.conv1.out_channels, unit.conv2.out_channels, unit.conv3.out_channels) == (4, 4, 16)
    x = torch.randn(2, 16, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(unit(x), preact_by_hand(unit, x, stride=1, projection=False))


@pytest.mark.parametrize(("cin", "cout", "stride"), [(16, 32, 2), (8, 32, 1)])
def test_preact_projection_is_applied_to_the_preactivated_input(cin: int, cout: int, stride: int) -> None:
    unit = randomize_bn(PreActBottleneck(cin, cout, stride))
    assert isinstance(unit.shortcut, nn.Conv2d)
    assert unit.shortcut.kernel_size == (1, 1) and unit.shortcut.stride == (stride, stride)
    # the stride sits on the 3x3 conv (and the projection), never on the 1x1 convs of the residual branch
    assert unit.conv1.stride == (1, 1) and unit.conv3.stride == (1, 1)
    assert unit.conv2.kernel_size == (3, 3) and unit.conv2.stride == (stride, stride)
    x = torch.randn(2, cin, 15, 15)
    with torch.no_grad():
        out = unit(x)
        expected = preact_by_hand(unit, x, stride, projection=True)
        # the same projection applied to the raw input gives something else: the test can tell them apart
        h_only = expected - F.conv2d(bn_relu(x, unit.preact), unit.shortcut.weight, stride=stride)
        on_raw_input = h_only + F.conv2d(x, unit.shortcut.weight, stride=stride)
    side = (15 - 1) // stride + 1
    assert out.shape == (2, cout, side, side)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, on_raw_input, atol=1e-3)


@pytest.mark.parametrize(("cin", "cout", "stride"), [(64, 64, 1), (64, 128, 2)])
def test_resnext_unit_matches_hand_computation(cin: int, cout: int, stride: int) -> None:
    unit = randomize_bn(ResNeXtBottleneck(cin, cout, stride))
    x = torch.randn(2, cin, 9, 11)
    with torch.no_grad():
        h = F.relu(bn(F.conv2d(x, unit.conv1.weight), unit.act1[0]))
        h = F.conv2d(h, unit.conv2.weight, stride=stride, padding=1, groups=32)
        h = F.relu(bn(h, unit.act2[0]))
        h = bn(F.conv2d(h, unit.conv3.weight), unit.bn3)
        if unit.shortcut is None:
            shortcut = x
        else:
            shortcut = bn(F.conv2d(x, unit.shortcut[0].weight, stride=stride), unit.shortcut[1])
        expected = F.relu(h + shortcut)
        out = unit(x)
    assert (unit.shortcut is None) == (cin == cout and stride == 1)
    torch.testing.assert_close(out, expected)
    assert out.min() >= 0  # post-activation unit


@pytest.mark.parametrize("channels", [256, 512, 1024, 2048])
def test_resnext_unit_is_32x4d(channels: int) -> None:
    """Inner width C/2 (128 for 256 ... 1024 for 2048) and 32 groups on the 3x3, as in the prototxt."""
    unit = ResNeXtBottleneck(channels, channels)
    assert unit.conv2.groups == 32
    assert unit.conv2.in_channels == unit.conv2.out_channels == channels // 2
    assert unit.conv2.weight.shape == (channels // 2, channels // 2 // 32, 3, 3)


def test_resnext_unit_with_narrow_width_and_bad_cardinality() -> None:
    # narrower than 32 groups (the tiny CIFAR twins): one group per channel
    assert ResNeXtBottleneck(16, 16).conv2.groups == 8
    with pytest.raises(ValueError, match="not divisible by cardinality 32"):
        ResNeXtBottleneck(100, 100)


def test_inception_unit_shape_and_budget() -> None:
    unit = randomize_bn(InceptionResidualUnit(64, 128, stride=2))
    out = unit(torch.randn(1, 64, 15, 10))
    assert out.shape == (1, 128, 8, 5)

    # its conv weights stay at the bottleneck's budget (~1.05 C^2 vs 1.0625 C^2), docs/paper.md §3.4
    def conv_weights(m: nn.Module) -> int:
        return sum(c.weight.numel() for n, c in m.named_modules() if isinstance(c, nn.Conv2d) and "shortcut" not in n)

    ratio = conv_weights(InceptionResidualUnit(256, 256)) / conv_weights(PreActBottleneck(256, 256))
    assert ratio == pytest.approx(1.046875 / 1.0625, rel=1e-6)


@pytest.mark.parametrize("unit_type", sorted(UNIT_TYPES))
def test_units_have_no_conv_bias(unit_type: str) -> None:
    unit = unit_class(unit_type)(64, 128, 2)
    convs = [m for m in unit.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.bias is None for c in convs)


@pytest.mark.parametrize("unit_type", sorted(t for t, cls in UNIT_TYPES.items() if hasattr(cls, "zero_init_last")))
@pytest.mark.parametrize(("cin", "cout", "stride"), [(64, 64, 1), (32, 64, 2)])
def test_zero_init_last_makes_the_unit_its_shortcut(unit_type: str, cin: int, cout: int, stride: int) -> None:
    unit = randomize_bn(unit_class(unit_type)(cin, cout, stride))
    x = torch.randn(2, cin, 8, 8)
    if isinstance(unit, ResNeXtBottleneck):
        nn.init.zeros_(unit.bn3.bias)  # as after the network's init: zero_init_last only zeroes the BN scale
    with torch.no_grad():
        before = unit(x)
        unit.zero_init_last()
        out = unit(x)
        if unit.shortcut is None:
            shortcut = x
        elif unit_class(unit_type).preactivation:
            shortcut = unit.shortcut(unit.preact(x))
        else:
            shortcut = unit.shortcut(x)
    expected = shortcut if unit_class(unit_type).preactivation else F.relu(shortcut)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(before, expected, atol=1e-3)  # the residual branch was doing something before


@pytest.mark.parametrize(("cin", "cout", "stride", "side"), [(8, 16, 1, 7), (8, 16, 2, 7), (16, 16, 2, 8)])
def test_plain_unit_is_a_max_pool_and_one_conv_bn_relu(cin: int, cout: int, stride: int, side: int) -> None:
    """No shortcut; a stride is a max-pool before the conv, with the strided conv's output side (odd sides too)."""
    unit = randomize_bn(PlainUnit(cin, cout, stride))
    x = torch.randn(2, cin, side, side)
    pooled = F.max_pool2d(x, stride, stride, ceil_mode=True) if stride > 1 else x
    with torch.no_grad():
        out = unit(x)
        torch.testing.assert_close(out, bn_relu(F.conv2d(pooled, unit.conv.weight, padding=1), unit.act))
    assert out.shape == (2, cout, (side - 1) // stride + 1, (side - 1) // stride + 1)
    assert not hasattr(unit, "shortcut") and not hasattr(unit, "zero_init_last") and PlainUnit.trunk_layers == 1


def test_unit_class_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"unknown unit_type 'bottleneck'.*inception.*preact.*resnext"):
        unit_class("bottleneck")


def test_make_units_keeps_width_and_resolution() -> None:
    units = make_units("preact", 32, 3)
    assert len(units) == 3 and all(isinstance(u, PreActBottleneck) and u.shortcut is None for u in units)
    assert units(torch.randn(1, 32, 5, 7)).shape == (1, 32, 5, 7)
    assert len(make_units("preact", 32, 0)) == 0
