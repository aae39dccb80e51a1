"""Soft mask branch and mask activations (docs/paper.md §1.4, §2, §7.1-7.3, Table 4), checked by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_bn
from torch import nn

from resattn.mask import (
    HourglassMask,
    LocalMask,
    MaskActivation,
    MaskTail,
    SoftMaskBranch,
    flop_matched_local_units,
    hourglass_cost_in_units,
    pooled_size,
    upsample_to,
)
from resattn.units import PreActBottleneck


def caffe_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)


def up(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=True)


def stage1_mask_by_hand(mask: HourglassMask, x0: torch.Tensor) -> torch.Tensor:
    """docs/paper.md §1.4's stage-1 recipe written out: three pools, two skips, nothing else added."""
    d1 = mask.down[0](caffe_pool(x0))
    d2 = mask.down[1](caffe_pool(d1))
    d3 = mask.down[2](caffe_pool(d2))
    u2 = mask.up[1](up(d3, d2) + mask.skips[1](d2))
    u1 = mask.up[0](up(u2, d1) + mask.skips[0](d1))
    return up(u1, x0)


def tail_by_hand(tail: MaskTail, m: torch.Tensor) -> torch.Tensor:
    bn1, conv1, bn2, conv2 = tail[0][0], tail[1], tail[2][0], tail[3]

    def bn(x: torch.Tensor, b: nn.BatchNorm2d) -> torch.Tensor:
        return F.batch_norm(x, b.running_mean, b.running_var, b.weight, b.bias, training=False, eps=b.eps)

    h = F.conv2d(F.relu(bn(m, bn1)), conv1.weight)
    return F.conv2d(F.relu(bn(h, bn2)), conv2.weight)


# --- mask activations (docs/paper.md §2) ---------------------------------------------------------------
def test_mixed_is_elementwise_sigmoid() -> None:
    x = torch.tensor([-2.0, 0.0, 3.0]).view(1, 3, 1, 1)
    expected = torch.tensor([1 / (1 + math.exp(2.0)), 0.5, 1 / (1 + math.exp(-3.0))]).view(1, 3, 1, 1)
    torch.testing.assert_close(MaskActivation("mixed")(x), expected)
    x = torch.randn(2, 5, 4, 3) * 4
    out = MaskActivation("mixed")(x)
    torch.testing.assert_close(out, torch.sigmoid(x))
    assert out.min() > 0 and out.max() < 1


def test_channel_l2_normalises_each_position() -> None:
    # position (0,0) holds the C-vector (3, -4) -> (0.6, -0.8); position (0,1) holds (0, 2) -> (0, 1)
    x = torch.tensor([[[[3.0, 0.0]], [[-4.0, 2.0]]]])  # (1, 2, 1, 2)
    out = MaskActivation("channel")(x)
    torch.testing.assert_close(out, torch.tensor([[[[0.6, 0.0]], [[-0.8, 1.0]]]]), atol=1e-5, rtol=0)
    x = torch.randn(3, 7, 5, 4) * 3
    out = MaskActivation("channel")(x)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3, 5, 4), atol=1e-5, rtol=0)
    # no spatial information: it is invariant to rescaling a position's vector, and may be negative
    scale = torch.rand(3, 1, 5, 4) + 0.5
    torch.testing.assert_close(MaskActivation("channel")(x * scale), out, atol=1e-5, rtol=0)
    assert out.min() < 0 and out.abs().max() <= 1


def test_spatial_standardises_each_channel_per_sample() -> None:
    # one channel map [0, 2]: mean 1, (population) std 1 -> sigmoid(-1), sigmoid(1)
    x = torch.tensor([[[[0.0, 2.0]]]])
    act = MaskActivation("spatial", eps=0.0)
    torch.testing.assert_close(act(x), torch.sigmoid(torch.tensor([[[[-1.0, 1.0]]]])))

    x = torch.randn(2, 3, 6, 5) * 3 + 1
    eps = 1e-5
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    expected = torch.sigmoid((x - mean) / (var + eps).sqrt())
    out = MaskActivation("spatial", eps=eps)(x)
    torch.testing.assert_close(out, expected)
    # per sample: changing sample 1 leaves sample 0 alone; per channel: an affine change of one map is undone
    y = x.clone()
    y[1] = torch.randn(3, 6, 5) * 10
    y[0, 2] = 7 * y[0, 2] - 3
    out_y = MaskActivation("spatial", eps=eps)(y)
    torch.testing.assert_close(out_y[0], out[0], atol=1e-5, rtol=0)
    assert not torch.allclose(out_y[1], out[1], atol=1e-3)


@pytest.mark.parametrize("mask_type", ["mixed", "channel", "spatial"])
@pytest.mark.parametrize("value", [0.0, 2.5])
def test_constant_input_gives_finite_values_and_gradients(mask_type: str, value: float) -> None:
    x = torch.full((2, 4, 3, 3), value, requires_grad=True)
    out = MaskActivation(mask_type)(x)
    expected = {
        "mixed": torch.sigmoid(torch.tensor(value)),
        "channel": torch.tensor(0.0 if value == 0 else 0.5),  # 2.5 / (2.5 * sqrt(4))
        "spatial": torch.tensor(0.5),  # (x - mean) = 0 over a constant map
    }[mask_type]
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-5, rtol=0)
    (out * torch.randn_like(out)).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_unknown_mask_type_lists_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown mask_type 'softmax'.*mixed.*channel.*spatial"):
        MaskActivation("softmax")


# --- pooling and up-sampling (docs/paper.md §1.4, §7.2, §7.3) ----------------------------------------
def test_pooled_size_is_caffe_ceil_mode() -> None:
    for size in range(2, 80):
        expected = math.ceil((size - 3) / 2) + 1
        assert pooled_size(size) == expected, size
        assert caffe_pool(torch.zeros(1, 1, size, size)).shape[-1] == expected, size


def test_upsample_to_is_align_corners_to_the_reference_size() -> None:
    x = torch.tensor([[[[1.0, 3.0]]]])  # (1, 1, 1, 2)
    ref = torch.zeros(1, 5, 1, 3)
    # align-corners: the end points are kept and the middle is their mean
    torch.testing.assert_close(upsample_to(x, ref), torch.tensor([[[[1.0, 2.0, 3.0]]]]))
    x = torch.randn(1, 2, 3, 4)
    torch.testing.assert_close(upsample_to(x, x), x)  # equal sizes: a straight copy
    out = upsample_to(x, torch.zeros(1, 1, 7, 5))
    assert out.shape == (1, 2, 7, 5)
    torch.testing.assert_close(out[..., 0, 0], x[..., 0, 0])
    torch.testing.assert_close(out[..., -1, -1], x[..., -1, -1])


# --- hourglass structure -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("num_pools", "r", "down", "skips", "ups", "total"),
    [
        (3, 1, [1, 1, 2], 2, [1, 1], 8),  # stage 1: 8 RUs (prototxt)
        (2, 1, [1, 2], 1, [1], 5),  # stage 2: 5 RUs
        (1, 1, [2], 0, [], 2),  # stage 3: 2 RUs
        (3, 3, [3, 3, 6], 2, [3, 3], 20),  # Attention-452's r=3: r per level, 2r at the bottom, 1-unit skips
    ],
)
def test_hourglass_unit_counts(num_pools: int, r: int, down: list, skips: int, ups: list, total: int) -> None:
    mask = HourglassMask("preact", 8, num_pools, r)
    assert [len(d) for d in mask.down] == down
    assert [len(s) for s in mask.skips] == [1] * skips
    assert [len(u) for u in mask.up] == ups
    assert sum(isinstance(m, PreActBottleneck) for m in mask.modules()) == total


@pytest.mark.parametrize("size", [(15, 15), (20, 17), (8, 8)])
def test_hourglass_matches_the_prototxt_recipe(size: tuple[int, int]) -> None:
    """Pool -> down units -> skip units -> up-sample to the stored size -> + skip only -> up units -> to x.

    Neither the encoder feature nor the input is added a second time (docs/paper.md §7.1).
    """
    mask = randomize_bn(HourglassMask("preact", 8, num_pools=3))
    x0 = torch.randn(2, 8, *size)
    with torch.no_grad():
        out = mask(x0)
        expected = stage1_mask_by_hand(mask, x0)
        # the port's reading (encoder added again at each up-sampling) is a different function
        d1 = mask.down[0](caffe_pool(x0))
        d2 = mask.down[1](caffe_pool(d1))
        d3 = mask.down[2](caffe_pool(d2))
        u2 = mask.up[1](up(d3, d2) + mask.skips[1](d2) + d2)
        port = up(mask.up[0](up(u2, d1) + mask.skips[0](d1) + d1), x0)
    assert out.shape == x0.shape
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, port, atol=1e-3)


def test_hourglass_upsamples_to_the_skip_sizes_for_odd_inputs() -> None:
    mask = HourglassMask("preact", 4, num_pools=3).eval()
    seen: list[tuple[int, int]] = []
    for level in (1, 0):  # forward order: the deeper level first
        mask.up[level].register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape[-2:])))
    with torch.no_grad():
        out = mask(torch.randn(1, 4, 15, 21))
    # 15 -> 7 -> 3 -> 1 and 21 -> 10 -> 5 -> 2 (ceil mode); up-sampling goes back to 3x5, 7x10, 15x21
    assert seen == [(3, 5), (7, 10)]
    assert out.shape == (1, 4, 15, 21)


def test_hourglass_needs_a_pool() -> None:
    with pytest.raises(ValueError, match="num_pools >= 1"):
        HourglassMask("preact", 8, 0)


# --- tail and full branch ------------------------------------------------------------------------
def test_mask_tail_layouts() -> None:
    pre = MaskTail(16, preactivation=True)
    assert [type(m).__name__ for m in pre] == ["BNReLU", "Conv2d", "BNReLU", "Conv2d"]
    post = MaskTail(16, preactivation=False)  # NeXt: the first BN-ReLU is dropped
    assert [type(m).__name__ for m in post] == ["Conv2d", "BNReLU", "Conv2d"]
    for tail in (pre, post):
        convs = [m for m in tail if isinstance(m, nn.Conv2d)]
        assert all(c.kernel_size == (1, 1) and c.in_channels == c.out_channels == 16 for c in convs)
        assert all(c.bias is None for c in convs)
        assert isinstance(tail[-1], nn.Conv2d)  # no BN between the last 1x1 and the activation


@pytest.mark.parametrize("mask_type", ["mixed", "channel", "spatial"])
def test_soft_mask_branch_by_hand(mask_type: str) -> None:
    branch = randomize_bn(SoftMaskBranch("preact", 8, num_pools=3, mask_type=mask_type))
    x0 = torch.randn(2, 8, 15, 13)
    activation = {
        "mixed": torch.sigmoid,
        "channel": lambda t: t / (t.pow(2).sum(dim=1, keepdim=True) + 1e-5).sqrt(),
        "spatial": lambda t: torch.sigmoid(
            (t - t.mean(dim=(2, 3), keepdim=True)) / (t.var(dim=(2, 3), keepdim=True, correction=0) + 1e-5).sqrt()
        ),
    }[mask_type]
    with torch.no_grad():
        expected = activation(tail_by_hand(branch.tail, stage1_mask_by_hand(branch.body, x0)))
        out = branch(x0)
    assert out.shape == x0.shape
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    ("num_pools", "r", "cost"), [(3, 1, 3 / 4 + 3 / 16 + 2 / 64), (1, 1, 2 / 4), (2, 3, 7 / 4 + 6 / 16)]
)
def test_hourglass_cost_in_units(num_pools: int, r: int, cost: float) -> None:
    assert hourglass_cost_in_units(num_pools, r) == pytest.approx(cost)
    assert flop_matched_local_units(num_pools, r) == max(1, round(cost))


def test_local_mask_structure() -> None:
    branch = SoftMaskBranch("preact", 8, num_pools=3, mask_structure="local").eval()
    assert isinstance(branch.body, LocalMask)
    assert len(branch.body.units) == flop_matched_local_units(3)
    assert not any(isinstance(m, nn.MaxPool2d) for m in branch.modules())  # no down/up-sampling
    x0 = torch.randn(1, 8, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(branch(x0), torch.sigmoid(branch.tail(branch.body.units(x0))))
    assert len(SoftMaskBranch("preact", 8, 3, mask_structure="local", local_mask_units=3).body.units) == 3
    with pytest.raises(ValueError, match="at least one unit"):
        LocalMask("preact", 8, 0)


def test_unknown_mask_structure_lists_the_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown mask structure 'unet'.*hourglass.*local"):
        SoftMaskBranch("preact", 8, 3, mask_structure="unet")
