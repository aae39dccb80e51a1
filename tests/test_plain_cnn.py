"""The plain small CNN baseline (resattn_plaincnn_cifar, model=cnn): layout, shapes, features, config."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from helpers import compose_config
from omegaconf import OmegaConf
from torch import nn

from resattn.units import PlainUnit

NAME = "resattn_plaincnn_cifar"


def test_it_is_three_stages_of_two_convs_with_max_pools_between() -> None:
    net = timm.create_model(NAME, in_chans=1)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (1, 32, (3, 3), (1, 1)),
        (32, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (1, 1)),
        (64, 64, (3, 3), (1, 1)),
        (64, 128, (3, 3), (1, 1)),
        (128, 128, (3, 3), (1, 1)),
    ]
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 2 and all(p.kernel_size == p.stride == 2 for p in pools)
    assert sum(isinstance(m, PlainUnit) for m in net.modules()) == 5  # the stem holds stage 1's first conv
    assert not list(net.attention_modules()) and isinstance(net.norm, nn.Identity)
    assert sum(p.numel() for p in net.parameters()) == 288_170


def test_forward_on_cluttered_canvases_and_odd_sizes() -> None:
    net = timm.create_model(NAME, in_chans=1).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 60, 60)).shape == (2, 10)
        assert net.forward_features(torch.randn(2, 1, 60, 60)).shape == (2, 128, 15, 15)
        assert net.forward_features(torch.randn(1, 1, 33, 47)).shape == (1, 128, 9, 12)  # (s - 1) // 4 + 1
        assert net(torch.randn(1, 1, 1, 1)).shape == (1, 10)  # no mask to pool: any size
    net.reset_classifier(3)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 3)


def test_features_only() -> None:
    net = timm.create_model(NAME, in_chans=1, features_only=True).eval()
    assert net.feature_info.channels() == [32, 32, 64, 128] and net.feature_info.reduction() == [1, 1, 2, 4]
    with torch.no_grad():
        features = net(torch.randn(2, 1, 60, 60))
    assert [tuple(f.shape) for f in features] == [(2, 32, 60, 60), (2, 32, 60, 60), (2, 64, 30, 30), (2, 128, 15, 15)]


def test_trains_one_step() -> None:
    net = timm.create_model(NAME, in_chans=1).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(8, 1, 60, 60), torch.arange(8) % 10
    before = nn.functional.cross_entropy(net(x), y)
    before.backward()
    optimizer.step()
    assert all(p.grad is not None for p in net.parameters())
    assert nn.functional.cross_entropy(net(x), y) < before


def test_model_cnn_is_cifar_only(tmp_path: Path) -> None:
    cfg = compose_config("train", ["model=cnn", "data=fashion_mnist"], tmp_path)
    assert cfg.module.arch == NAME
    cfg = compose_config("train", ["model=cnn", "data=imagenet"], tmp_path)
    with pytest.raises(Exception, match=r"model\.archs\.imagenet"):
        OmegaConf.to_container(cfg.module, resolve=True)
