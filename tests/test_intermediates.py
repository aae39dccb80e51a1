"""Intermediate features the timm way: forward_intermediates, prune_intermediate_layers, the feature getter,
FX feature extraction, and the attention masks through each of them."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.models import create_feature_extractor

from resattn.net import ResidualAttentionNet

NETS = [("resattn_tiny", (2, 3, 40, 33)), ("resattn_tiny_cifar", (2, 3, 20, 17))]


def fresh(name: str, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(1)
    return timm.create_model(name, **kwargs).eval()


@pytest.mark.parametrize(("name", "shape"), NETS)
def test_forward_intermediates_are_the_feature_info_levels(name: str, shape: tuple[int, ...]) -> None:
    net = fresh(name)
    x = torch.randn(shape)
    with torch.no_grad():
        final, taps = net.forward_intermediates(x)
        torch.testing.assert_close(final, net.forward_features(x), rtol=0, atol=0)
        # features_only (hooks, the last level after the final norm) gives the same levels
        listed = fresh(name, features_only=True)(x)
        normed = net.forward_intermediates(x, norm=True, intermediates_only=True)
    assert [t.shape[1] for t in taps] == [i["num_chs"] for i in net.feature_info]
    assert len(taps) == len(listed) == len(net.stages) + 1
    for hooked, with_norm in zip(listed, normed, strict=True):
        torch.testing.assert_close(with_norm, hooked, rtol=0, atol=0)
    for tap, with_norm in zip(taps[:-1], normed[:-1], strict=True):
        torch.testing.assert_close(tap, with_norm, rtol=0, atol=0)  # the norm only touches the last level
    torch.testing.assert_close(normed[-1], net.norm(taps[-1]))
    torch.testing.assert_close(taps[0], net.stem(x))


@pytest.mark.parametrize(("name", "shape"), NETS)
def test_indices_and_stop_early(name: str, shape: tuple[int, ...]) -> None:
    net = fresh(name)
    x = torch.randn(shape)
    levels = len(net.feature_info)
    with torch.no_grad():
        taps = net.forward_intermediates(x, intermediates_only=True)
        for i in range(levels):
            (early,) = net.forward_intermediates(x, indices=[i], stop_early=True, intermediates_only=True)
            torch.testing.assert_close(early, taps[i], rtol=0, atol=0)
        last_two = net.forward_intermediates(x, indices=2, intermediates_only=True)
        negative = net.forward_intermediates(x, indices=[-1, 0], intermediates_only=True)
    assert [t.shape for t in last_two] == [t.shape for t in taps[-2:]]
    assert [t.shape for t in negative] == [taps[0].shape, taps[-1].shape]  # in forward order
    with pytest.raises(AssertionError, match=f"feature index {levels} is out of range"):  # timm's check
        net.forward_intermediates(x, indices=[levels])
    with pytest.raises(ValueError, match="output_fmt must be 'NCHW'"):
        net.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize(("name", "shape"), NETS)
def test_pruned_network_keeps_its_taps_and_trains(name: str, shape: tuple[int, ...]) -> None:
    net = fresh(name)
    x = torch.randn(shape)
    with torch.no_grad():
        taps = net.forward_intermediates(x, intermediates_only=True)
    for i in range(len(taps)):
        pruned = copy.deepcopy(net)
        taken = pruned.prune_intermediate_layers([i], prune_norm=True)
        assert taken == [i] and len(pruned.stages) == i
        assert pruned.num_classes == 0 and pruned.num_features == net.feature_info[i]["num_chs"]
        with torch.no_grad():
            (tap,) = pruned.forward_intermediates(x, indices=taken, intermediates_only=True)
            torch.testing.assert_close(tap, taps[i], rtol=0, atol=0)
            torch.testing.assert_close(pruned(x), taps[i], rtol=0, atol=0)  # unpooled, no head
        pruned.train()
        sum(f.sum() for f in pruned.forward_intermediates(x, indices=taken, intermediates_only=True)).backward()
        assert [n for n, p in pruned.named_parameters() if p.grad is None] == []
    # fewer stages, smaller inputs: the stem alone takes a single pixel
    stem_only = copy.deepcopy(net)
    stem_only.prune_intermediate_layers([0])
    assert stem_only.min_input_size() == 1 < net.min_input_size()


def test_pruning_the_head_only() -> None:
    net = fresh("resattn_tiny_cifar")
    x = torch.randn(2, 3, 16, 16)
    kept = copy.deepcopy(net)
    assert kept.prune_intermediate_layers(len(net.feature_info), prune_head=False) == [0, 1, 2, 3]
    with torch.no_grad():
        torch.testing.assert_close(kept(x), net(x), rtol=0, atol=0)
        headless = copy.deepcopy(net)
        headless.prune_intermediate_layers([-1])
        torch.testing.assert_close(headless(x), net.forward_features(x), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "shape"), NETS)
def test_feature_getter_and_its_torchscript(name: str, shape: tuple[int, ...]) -> None:
    net = fresh(name)
    getter = fresh(name, features_only=True, feature_cls="getter", out_indices=(1, -1))
    x = torch.randn(shape)
    with torch.no_grad():
        taps = net.forward_intermediates(x, intermediates_only=True)
        features = getter(x)
        scripted = torch.jit.script(getter)(x)
    assert getter.feature_info.channels() == [net.feature_info[1]["num_chs"], net.num_features]
    assert len(getter.model.stages) == len(net.stages)  # the last level needs every stage
    for got, tap in zip(features, [taps[1], taps[-1]], strict=True):
        torch.testing.assert_close(got, tap, rtol=0, atol=0)
    for got, tap in zip(scripted, features, strict=True):
        torch.testing.assert_close(got, tap)


def test_masks_from_forward_intermediates_match_capture_masks() -> None:
    net = fresh("resattn_tiny")
    x = torch.randn(2, 3, 64, 40)
    with torch.no_grad(), net.capture_masks() as captured:
        final, taps, masks = net.forward_intermediates(x, return_masks=True)
        only_taps, only_masks = net.forward_intermediates(x, intermediates_only=True, return_masks=True)
    assert list(masks) == list(only_masks) == [name for name, _ in net.attention_modules()]
    for name, mask in masks.items():
        torch.testing.assert_close(mask, captured[name], rtol=0, atol=0)
        torch.testing.assert_close(only_masks[name], mask, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(final, net.forward_features(x), rtol=0, atol=0)
        (early,), early_masks = net.forward_intermediates(
            x, indices=[1], stop_early=True, intermediates_only=True, return_masks=True
        )
    assert len(only_taps) == len(taps)
    torch.testing.assert_close(early, taps[1], rtol=0, atol=0)
    assert list(early_masks) == ["stages.0.attention.0"]  # only the modules that ran
    net.train()
    _, _, trained = net.forward_intermediates(x, return_masks=True)
    assert all(m.requires_grad for m in trained.values())  # unlike capture_masks, they carry gradients


def test_grad_checkpointing_gives_the_same_intermediates() -> None:
    net = fresh("resattn_tiny_cifar").train()
    x = torch.randn(2, 3, 16, 16)
    plain_final, plain_taps, plain_masks = net.forward_intermediates(x, return_masks=True)
    net.set_grad_checkpointing(True)
    final, taps, masks = net.forward_intermediates(x, return_masks=True)
    torch.testing.assert_close(final, plain_final)
    for got, expected in zip([*taps, *masks.values()], [*plain_taps, *plain_masks.values()], strict=True):
        torch.testing.assert_close(got, expected)


def test_fx_feature_extraction_of_stages_and_masks() -> None:
    net = fresh("resattn_tiny_cifar")
    x = torch.randn(1, 3, 24, 24)
    extractor = create_feature_extractor(net, return_nodes={"stages.1": "stage1", "stages.1.attention.0.mask": "mask"})
    fx_features = fresh("resattn_tiny_cifar", features_only=True, feature_cls="fx")
    with torch.no_grad(), net.capture_masks() as masks:
        taps = net.forward_intermediates(x, intermediates_only=True)
        out = extractor(x)
        listed = fx_features(x)
    torch.testing.assert_close(out["stage1"], taps[2], rtol=0, atol=0)
    torch.testing.assert_close(out["mask"], masks["stages.1.attention.0"], rtol=0, atol=0)
    assert [f.shape for f in listed] == [t.shape for t in taps]
    with pytest.raises(ValueError, match="at least 8x8 pixels"):
        extractor(torch.randn(1, 3, 7, 7))  # the traced graph keeps the input check


def test_the_timm_feature_api_on_a_plain_instance() -> None:
    """Not only through timm.create_model: the class itself carries the API."""
    net = ResidualAttentionNet("resattn_tiny_cifar", num_classes=3).eval()
    assert net.prune_intermediate_layers(2) == [2, 3] and net.num_classes == 0
