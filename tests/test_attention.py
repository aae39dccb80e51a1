"""The attention module (docs/paper.md §1.1, §1.5): ARL (1+M)*T vs NAL M*T, assembly p/t/p around the mask."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_bn
from torch import nn

from resattn.attention import AttentionModule
from resattn.mask import HourglassMask, MaskActivation, SoftMaskBranch
from resattn.units import PreActBottleneck, ResNeXtBottleneck


class ConstantMask(nn.Module):
    """Stand-in for the soft mask branch: M = value everywhere, shaped like its input."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


def module(residual: bool, **kw: object) -> AttentionModule:
    return randomize_bn(AttentionModule("preact", 8, num_pools=2, attention_residual=residual, **kw))


def test_structure_p_t_r() -> None:
    m = AttentionModule("preact", 8, num_pools=3)
    assert (len(m.pre), len(m.trunk), len(m.post)) == (1, 2, 1)  # p=1, t=2 (docs/paper.md §1.2)
    assert isinstance(m.mask, SoftMaskBranch) and isinstance(m.mask.body, HourglassMask)
    assert m.attention_residual and m.mask.activation.mask_type == "mixed"
    m452 = AttentionModule("preact", 8, num_pools=3, num_pre_units=2, num_trunk_units=4, units_per_level=3)
    assert (len(m452.pre), len(m452.trunk), len(m452.post)) == (2, 4, 2)
    assert [len(d) for d in m452.mask.body.down] == [3, 3, 6]
    nxt = AttentionModule("resnext", 64, num_pools=1)
    assert all(isinstance(u, ResNeXtBottleneck) for u in (*nxt.pre, *nxt.trunk, *nxt.post))
    assert not isinstance(nxt.mask.tail[0], nn.Sequential)  # NeXt tail starts with the 1x1 conv


@pytest.mark.parametrize("residual", [True, False])
def test_zero_mask_gives_trunk_under_arl_and_zero_under_nal(residual: bool) -> None:
    m = module(residual)
    m.mask = ConstantMask(0.0)
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        trunk = m.trunk(m.pre(x))
        expected = m.post(trunk if residual else torch.zeros_like(trunk))
        out = m(x)
    torch.testing.assert_close(out, expected)
    # and the post unit really sees F: T (ARL) or exactly zero (NAL)
    seen: list[torch.Tensor] = []
    m.post.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        m(x)
    torch.testing.assert_close(seen[0], trunk if residual else torch.zeros_like(trunk), atol=0, rtol=0)


@pytest.mark.parametrize(("residual", "factor"), [(True, 1.5), (False, 0.5)])
def test_mixed_mask_at_zero_logits_scales_the_trunk(residual: bool, factor: float) -> None:
    """Zero the last tail conv: sigmoid(0) = 0.5, so F = 1.5 T (ARL) or 0.5 T (NAL)."""
    m = module(residual)
    nn.init.zeros_(m.mask.tail[-1].weight)
    seen: list[torch.Tensor] = []
    m.post.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    x = torch.randn(2, 8, 9, 11)
    with torch.no_grad():
        out = m(x)
        trunk = m.trunk(m.pre(x))
        expected_post = m.post(factor * trunk)
    torch.testing.assert_close(seen[0], factor * trunk)
    torch.testing.assert_close(out, expected_post)


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("mask_type", ["mixed", "channel", "spatial"])
def test_module_output_is_post_of_fused_trunk_and_mask(residual: bool, mask_type: str) -> None:
    """y = post((1+M)*T) or post(M*T), with T and M both computed from the pre units' output."""
    m = module(residual, mask_type=mask_type)
    x = torch.randn(2, 8, 13, 10)
    with torch.no_grad():
        a = m.pre(x)
        trunk, mask = m.trunk(a), m.mask(a)
        fused = (1 + mask) * trunk if residual else mask * trunk
        expected = m.post(fused)
        # the mask is computed from a (the p-unit output, docs/paper.md §7.6), not from the module input x
        from_input = m.post((1 + m.mask(x)) * trunk if residual else m.mask(x) * trunk)
        out = m(x)
    assert mask.shape == trunk.shape == out.shape == x.shape
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, from_input, atol=1e-3)


@pytest.mark.parametrize(("residual", "value"), [(True, 0.25), (False, 0.25), (False, 0.8)])
def test_mask_filters_trunk_gradients(residual: bool, value: float) -> None:
    """Eq. 2: d(M T)/d(phi) = M dT/d(phi); with ARL the factor is (1 + M). Checked with p = 0 (no post units)."""

    def trunk_grads(mask_value: float) -> list[torch.Tensor]:
        torch.manual_seed(1)
        m = AttentionModule("preact", 8, num_pools=1, num_pre_units=0, attention_residual=residual).double()
        m.mask = ConstantMask(mask_value)
        x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
        (m(x) * torch.randn(2, 8, 6, 6, dtype=torch.float64)).sum().backward()
        return [p.grad for p in m.trunk.parameters()]

    reference = trunk_grads(0.0 if residual else 1.0)
    scaled = trunk_grads(value)
    factor = 1 + value if residual else value
    for g_ref, g in zip(reference, scaled, strict=True):
        torch.testing.assert_close(g, factor * g_ref)
    assert any(g.abs().sum() > 0 for g in reference)


def test_module_units_are_preactivation_bottlenecks_at_full_width() -> None:
    m = AttentionModule("preact", 16, num_pools=2)
    units = [u for u in m.modules() if isinstance(u, PreActBottleneck)]
    # 1 pre + 2 trunk + 1 post + 5 mask units (stage-2 mask), all C -> C at stride 1 without projection
    assert len(units) == 9
    assert all(u.shortcut is None and u.conv3.out_channels == 16 for u in units)
    assert isinstance(m.mask.activation, MaskActivation)
