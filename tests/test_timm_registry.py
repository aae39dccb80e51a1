"""timm integration: registry, create_model options, features_only, local pretrained weights, head API."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import resattn
from datamodules.cifar import CIFAR10DataModule
from datamodules.transforms import imagenet_statistics, imagenet_transform
from input_conventions import CIFAR10_MEAN, IMAGENET_MEAN
from resattn.net import ResidualAttentionNet


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_every_variant_is_registered_with_a_pretrained_cfg() -> None:
    names = timm.list_models("resattn*")
    assert sorted(names) == sorted(resattn.VARIANTS)
    for name in names:
        spec = resattn.get_variant(name)
        cfg = timm.get_pretrained_cfg(name).to_dict()
        assert cfg["input_size"] == spec.input_size and cfg["num_classes"] == spec.num_classes
        assert cfg["first_conv"] == "stem.conv" and cfg["classifier"] == "head.fc"
        assert cfg["mean"] == (IMAGENET_MEAN if spec.family == "imagenet" else CIFAR10_MEAN)


def test_timm_prepares_images_as_the_datamodules_do() -> None:
    """``resolve_data_config`` + ``create_transform`` on a network normalise as training does: for a CIFAR layout the
    CIFAR datamodules' channel means and no std division (they subtract the per-pixel mean image, docs/paper.md
    §5.1), uncropped; for an ImageNet layout the same single-crop evaluation pipeline, pixel for pixel."""
    cifar = timm.data.resolve_data_config(model=timm.create_model("resattn_tiny_cifar"))
    assert (cifar["mean"], cifar["std"]) == (CIFAR10DataModule.mean, CIFAR10DataModule.std)
    assert cifar["std"] == (1.0, 1.0, 1.0) and cifar["crop_pct"] == 1.0
    imagenet = timm.data.resolve_data_config(model=timm.create_model("resattn_tiny"))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (260, 300, 3), dtype=np.uint8))
    ours = imagenet_transform(224, *imagenet_statistics(3), train=False)(image)
    torch.testing.assert_close(timm.data.create_transform(**imagenet)(image), ours)


@pytest.mark.parametrize("name", ["resattn_tiny", "resattn_tiny_cifar", "resattninception56"])
def test_pool_size_in_cfg_matches_the_feature_map(name: str) -> None:
    cfg = timm.get_pretrained_cfg(name)
    with torch.device("meta"):
        net = timm.create_model(name)
    features = net.forward_features(torch.empty(1, *cfg.input_size, device="meta"))
    assert tuple(features.shape[-2:]) == tuple(cfg.pool_size)
    assert dict(net.named_modules())[cfg.first_conv].in_channels == 3
    assert dict(net.named_modules())[cfg.classifier] is net.get_classifier()


def test_create_model_num_classes_and_in_chans() -> None:
    net = timm.create_model("resattn_tiny_cifar", num_classes=7, in_chans=1).eval()
    assert isinstance(net, ResidualAttentionNet)
    assert net.stem.conv.in_channels == 1 and net.get_classifier().out_features == 7
    with torch.no_grad():
        assert net(torch.randn(2, 1, 28, 28)).shape == (2, 7)  # e.g. Fashion-MNIST
    with pytest.raises(ValueError, match=r"expected 1 input channel\(s\), got 3"):
        net(torch.randn(2, 3, 28, 28))


def test_create_model_passes_network_options() -> None:
    net = timm.create_model("resattn_tiny_cifar", mask_type="channel", attention_residual=False, drop_rate=0.3)
    modules = [m for _, m in net.attention_modules()]
    assert all(m.mask.activation.mask_type == "channel" and not m.attention_residual for m in modules)
    assert net.head.drop.p == 0.3


def test_unknown_model_name() -> None:
    # timm's own registry error (it does not list names); resattn.get_variant lists the known variants
    with pytest.raises(RuntimeError, match=r"Unknown model \(resattn999\)"):
        timm.create_model("resattn999")
    with pytest.raises(TypeError, match=r"unknown variant field\(s\) \['depths'\]"):
        timm.create_model("resattn_tiny_cifar", depths=(1, 2, 3))


def test_widths_rescale_the_stages_and_nothing_else() -> None:
    """``widths`` (one output width per stage) is how the cluttered study size-matches its rows."""
    net = timm.create_model("resattn_resnet101_cifar", widths=[16, 32, 64], stem_channels=8, num_classes=10, in_chans=1)
    assert net.spec.widths == (16, 32, 64) and net.num_features == 64
    assert [s.units_before for s in net.spec.stages] == [
        s.units_before for s in resattn.VARIANTS["resattn_resnet101_cifar"].stages
    ]
    assert sum(p.numel() for p in net.parameters()) == 69282
    with pytest.raises(
        ValueError, match=r"widths=\[16, 32\] for 'resattn_tiny_cifar': give one positive int per stage, 3"
    ):
        timm.create_model("resattn_tiny_cifar", widths=[16, 32])


def feature_sides(family: str, side: int) -> list[int]:
    """Spatial side of each feature level: stem (ImageNet: 7x7/2 pad 3, then 3x3/2 max-pool pad 0 in ceil
    mode; CIFAR: stride 1), then one stride-2 3x3 (pad 1) conv per stage after the first."""
    if family == "imagenet":
        side = -(-(((side - 1) // 2 + 1) - 3) // 2) + 1
        num_stages = 4
    else:
        num_stages = 3
    sides = [side, side]
    for _ in range(num_stages - 1):
        sides.append((sides[-1] - 1) // 2 + 1)
    return sides


@pytest.mark.parametrize(
    ("name", "size"), [("resattn_tiny", (65, 97)), ("resattn_tiny_cifar", (33, 47)), ("resattnext56_cifar", (17, 9))]
)
def test_features_only(name: str, size: tuple[int, int]) -> None:
    family = resattn.get_variant(name).family
    net = timm.create_model(name, features_only=True).eval()
    info = net.feature_info
    with torch.no_grad():
        features = net(torch.randn(2, 3, *size))
    assert len(features) == len(info.channels()) == len(resattn.get_variant(name).stages) + 1
    expected_reductions = [4, 4, 8, 16, 32] if family == "imagenet" else [1, 1, 2, 4]
    assert info.reduction() == expected_reductions
    sides = list(zip(feature_sides(family, size[0]), feature_sides(family, size[1]), strict=True))
    for feature, channels, reduction, side in zip(features, info.channels(), info.reduction(), sides, strict=True):
        assert feature.shape == (2, channels, *side)
        # the reduction is the stride up to rounding
        assert all(abs(s * reduction - full) < 2 * reduction for s, full in zip(side, size, strict=True))


def test_features_only_last_feature_is_forward_features() -> None:
    torch.manual_seed(1)
    full = timm.create_model("resattn_tiny_cifar").eval()
    torch.manual_seed(1)  # same initial weights (the wrapper renames them: stages.0 -> stages_0)
    feats = timm.create_model("resattn_tiny_cifar", features_only=True).eval()
    assert torch.equal(feats.stem.conv.weight, full.stem.conv.weight)
    x = torch.randn(2, 3, 16, 20)
    with torch.no_grad():
        torch.testing.assert_close(feats(x)[-1], full.forward_features(x))
        torch.testing.assert_close(feats(x)[0], full.stem(x))


def test_features_only_out_indices() -> None:
    net = timm.create_model("resattn_tiny_cifar", features_only=True, out_indices=(1, 3)).eval()
    assert net.feature_info.channels() == [16, 64] and net.feature_info.reduction() == [1, 4]
    with torch.no_grad():
        features = net(torch.randn(1, 3, 32, 32))
    assert [tuple(f.shape) for f in features] == [(1, 16, 32, 32), (1, 64, 8, 8)]


def test_pretrained_from_a_local_file(tmp_path: Path) -> None:
    source = timm.create_model("resattn_tiny_cifar")
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    loaded = timm.create_model("resattn_tiny_cifar", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert loaded.pretrained_cfg["file"] == str(path)
    state = source.state_dict()
    assert loaded.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    fresh = timm.create_model("resattn_tiny_cifar")
    assert not torch.equal(fresh.stem.conv.weight, loaded.stem.conv.weight)
    # a new classifier on top of the loaded trunk
    finetune = timm.create_model(
        "resattn_tiny_cifar", pretrained=True, num_classes=3, pretrained_cfg_overlay=dict(file=str(path))
    )
    assert finetune.get_classifier().out_features == 3
    assert torch.equal(finetune.stem.conv.weight, source.stem.conv.weight)
    # one input channel: timm folds the RGB filters of the first conv (named in the cfg) into one
    gray = timm.create_model(
        "resattn_tiny_cifar", pretrained=True, in_chans=1, pretrained_cfg_overlay=dict(file=str(path))
    )
    torch.testing.assert_close(gray.stem.conv.weight, source.stem.conv.weight.sum(dim=1, keepdim=True))


def test_reset_classifier_and_forward_head() -> None:
    net = timm.create_model("resattn_tiny_cifar").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        features = net.forward_features(x)
        pooled = net.forward_head(features, pre_logits=True)
        torch.testing.assert_close(pooled, features.mean(dim=(2, 3)))
        fc = net.get_classifier()
        assert isinstance(fc, nn.Linear) and fc.bias is not None
        torch.testing.assert_close(net(x), fc(pooled))

        net.reset_classifier(5)
        assert net.num_classes == 5 and net.get_classifier().out_features == 5
        assert net(x).shape == (2, 5)

        net.reset_classifier(0)
        assert net.num_classes == 0 and isinstance(net.get_classifier(), nn.Identity)
        torch.testing.assert_close(net(x), pooled)  # pooled features, width num_features
    assert pooled.shape == (2, net.num_features)
    with pytest.raises(ValueError, match="unsupported global_pool"):
        net.reset_classifier(5, global_pool="max")


def test_global_pool_empty_leaves_the_features_unpooled() -> None:
    """timm's contract: ``global_pool=""`` (with no classifier) returns the unpooled feature maps."""
    net = timm.create_model("resattn_tiny_cifar").eval()
    x = torch.randn(2, 3, 16, 12)
    with torch.no_grad():
        features = net.forward_features(x)
        net.reset_classifier(0, "")
        torch.testing.assert_close(net(x), features)
        torch.testing.assert_close(net.forward_head(features, pre_logits=True), features)
        net.reset_classifier(0)  # None keeps the pooling
        assert net(x).ndim == 4
        net.reset_classifier(3)  # a classifier needs pooled features: average pooling is back
        assert net(x).shape == (2, 3) and net.head.global_pool == "avg"
        unpooled = timm.create_model("resattn_tiny_cifar", num_classes=0, global_pool="").eval()
        assert unpooled(x).shape == features.shape
    with pytest.raises(ValueError, match=r"global_pool='' keeps the feature maps unpooled, so it needs num_classes=0"):
        net.reset_classifier(3, "")
    with pytest.raises(ValueError, match="needs num_classes=0"):
        timm.create_model("resattn_tiny_cifar", global_pool="")


def test_device_and_dtype_at_creation_and_on_reset() -> None:
    meta = timm.create_model("resattn_tiny", device="meta", dtype=torch.float64)
    tensors = dict(meta.named_parameters()) | dict(meta.named_buffers())
    assert all(t.device.type == "meta" for t in tensors.values())
    assert {t.dtype for t in tensors.values()} == {torch.float64, torch.long}  # long: BN's batch counters
    meta.eval().reset_classifier(7)
    fc = meta.get_classifier()
    assert fc.weight.device.type == "meta" and fc.weight.dtype == torch.float64 and not fc.training
    # the same structure as on the CPU
    cpu = timm.create_model("resattn_tiny")
    assert {k: v.shape for k, v in cpu.state_dict().items() if not k.startswith("head")} == {
        k: v.shape for k, v in meta.state_dict().items() if not k.startswith("head")
    }


def test_group_matcher_orders_units_and_modules_as_they_run() -> None:
    from timm.models._manipulate import group_parameters

    net = timm.create_model("resattn92_cifar", device="meta")
    coarse = group_parameters(net, net.group_matcher(coarse=True))
    assert len(coarse) == 1 + 3 + 1  # stem, the stages, then norm and head
    fine = group_parameters(net, net.group_matcher())
    firsts = [".".join(names[0].split(".")[:4]) for names in fine.values()]
    assert firsts[:6] == [
        "stem.conv.weight",
        "stages.0.units_before.0",
        "stages.0.attention.0",
        "stages.0.attention.1",
        "stages.0.units_after.0",
        "stages.1.units_before.0",
    ]
    assert len(fine) == 1 + 3 * (1 + 2 + 1) + 1


def test_grad_checkpointing_gives_the_same_output_and_gradients() -> None:
    plain = timm.create_model("resattn_tiny_cifar").train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    assert ckpt.grad_checkpointing and not plain.grad_checkpointing
    calls: list[int] = []
    ckpt.stages[0].register_forward_pre_hook(lambda *_: calls.append(1))
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    out_plain, out_ckpt = plain(x), ckpt(x)
    torch.testing.assert_close(out_ckpt, out_plain)
    F.cross_entropy(out_plain, y).backward()
    F.cross_entropy(out_ckpt, y).backward()
    assert len(calls) == 2  # the stage really was recomputed during backward
    grads = dict(plain.named_parameters())
    for name, p in ckpt.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, msg=name)
