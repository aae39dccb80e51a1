"""ResidualAttentionNet (docs/paper.md §3, §4): shapes of every variant, depth, size, gradients, masks, errors."""

from __future__ import annotations

import math
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import resattn
from resattn.attention import AttentionModule
from resattn.mask import LocalMask, flop_matched_local_units
from resattn.net import ResidualAttentionNet
from resattn.units import InceptionResidualUnit, PreActBottleneck, ResNeXtBottleneck

ALL_VARIANTS = timm.list_models("resattn*")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def gmacs(model: nn.Module, size: tuple[int, int]) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, model.in_chans, *size))
    return counter.get_total_flops() / 2e9


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_feature_size(family: str, side: int) -> int:
    """Spatial side of forward_features: conv 7x7/2 pad 3 + max-pool 3x3/2 ceil mode (ImageNet), then
    stride-2 3x3 convs with padding 1 in every stage but the first (4 stages ImageNet, 3 CIFAR)."""
    if family == "imagenet":
        side = (side + 2 * 3 - 7) // 2 + 1
        side = math.ceil((side - 3) / 2) + 1
        strided_stages = 3
    else:
        strided_stages = 2
    for _ in range(strided_stages):
        side = (side + 2 - 3) // 2 + 1
    return side


def input_sizes(name: str) -> list[tuple[int, int]]:
    """Small, odd and non-square sizes (ImageNet family: 31 is the minimum); batch 1 keeps even the deepest
    variants well under a second each on 2 CPU cores, so none needs the ``slow`` mark."""
    if resattn.get_variant(name).family == "imagenet":
        return [(31, 31), (32, 32), (33, 47), (65, 97)]
    return [(32, 32), (33, 47), (8, 13)]


# --- shapes ----------------------------------------------------------------------------------------
def test_registry_matches_the_variant_table() -> None:
    assert sorted(ALL_VARIANTS) == sorted(resattn.VARIANTS) == resattn.list_variants()
    assert len(ALL_VARIANTS) >= 18


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_every_variant_forward_shapes(name: str) -> None:
    spec = resattn.get_variant(name)
    net = timm.create_model(name).eval()
    assert isinstance(net, ResidualAttentionNet)
    assert net.num_features == spec.num_features == spec.stages[-1].out_channels
    assert net.num_classes == spec.num_classes == (1000 if spec.family == "imagenet" else 10)
    # no conv biases anywhere (docs/paper.md §3.1): apart from BN, the classifier's is the only bias
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))
    biases = {n for n, _ in net.named_parameters() if n.endswith(".bias")}
    bn_biases = {f"{n}.bias" for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert biases - bn_biases == {"head.fc.bias"}
    for h, w in input_sizes(name):
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            features = net.forward_features(x)
            logits = net.forward_head(features)
        fh, fw = expected_feature_size(spec.family, h), expected_feature_size(spec.family, w)
        assert features.shape == (1, net.num_features, fh, fw), (h, w)
        assert logits.shape == (1, net.num_classes)
        # (no finiteness check here: in eval mode with fresh BN statistics the deepest nets overflow)


def test_forward_equals_features_then_head_in_batches() -> None:
    net = ResidualAttentionNet("resattn_tiny_cifar").eval()
    x = torch.randn(3, 3, 20, 24)
    with torch.no_grad():
        out = net(x)
        torch.testing.assert_close(out, net.forward_head(net.forward_features(x)))
        # eval mode: every sample is independent of the others in its batch
        torch.testing.assert_close(out[1:2], net(x[1:2]), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("name", "minimum"), [("resattn_tiny", 31), ("resattn_tiny_cifar", 8), ("resattn56", 31)])
def test_minimum_input_size(name: str, minimum: int) -> None:
    net = ResidualAttentionNet(name).eval()
    assert net.min_input_size() == minimum
    with torch.no_grad():
        assert net(torch.randn(1, 3, minimum, minimum)).shape == (1, net.num_classes)
        for size in [(minimum - 1, minimum - 1), (minimum - 1, 64), (64, minimum - 1)]:
            with pytest.raises(ValueError, match=rf"at least {minimum}x{minimum}"):
                net(torch.randn(1, 3, *size))


# --- depth -----------------------------------------------------------------------------------------
def count_trunk_layers(net: ResidualAttentionNet) -> int:
    """Weighted layers on the trunk path counted in the built module: every conv and linear layer outside
    the soft mask branches and the projection shortcuts. Inception units have several parallel branches, so
    they count as three layers each, like the bottleneck they replace."""
    layers = 0
    for name, m in net.named_modules():
        parts = name.split(".")
        if "mask" in parts or "shortcut" in parts:
            continue
        if isinstance(m, InceptionResidualUnit):
            layers += 3
        elif isinstance(m, nn.Conv2d | nn.Linear) and not any(
            isinstance(net.get_submodule(".".join(parts[:i])), InceptionResidualUnit) for i in range(1, len(parts))
        ):
            layers += 1
    return layers


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_depth_formula_and_counted_depth(name: str) -> None:
    spec = resattn.get_variant(name)
    p, t = spec.num_pre_units, spec.num_trunk_units
    if spec.num_modules:
        assert spec.depth == 3 * (2 * p + t) * spec.num_modules + 20
    elif spec.unit_type == "plain":  # the plain CNN: stem conv, one conv per unit, classifier
        assert spec.depth == spec.num_standalone_units + 2 == 7
    else:  # pre-activation ResNet baselines: 9n + 2 with n units per stage
        n = {s.units_before + s.units_after for s in spec.stages}
        assert len(n) == 1 and spec.depth == 9 * n.pop() + 2
    number = re.findall(r"\d+", name)
    if number:
        assert spec.depth == int(number[-1])
    else:
        assert name in {"resattn_tiny", "resattn_tiny_cifar", "resattn_plaincnn_cifar"}
        assert spec.depth == (7 if spec.unit_type == "plain" else 56)
    with torch.device("meta"):  # structure only, no weights needed
        net = ResidualAttentionNet(name)
    assert count_trunk_layers(net) == spec.depth
    modules = [m for _, m in net.attention_modules()]
    assert len(modules) == spec.num_modules
    assert all((len(m.pre), len(m.trunk), len(m.post)) == (p, t, p) for m in modules)
    # the smallest input every mask can still pool (no attention modules: any size)
    assert net.min_input_size() == (1 if not modules else 31 if spec.family == "imagenet" else 8)


def test_depth_table_of_the_paper() -> None:
    depths = {n: resattn.get_variant(n).depth for n in ALL_VARIANTS}
    assert [depths[f"resattn{d}_cifar"] for d in (56, 92, 128, 164, 236, 452)] == [56, 92, 128, 164, 236, 452]
    assert [depths[f"resattn{d}"] for d in (56, 92, 128, 164)] == [56, 92, 128, 164]
    assert depths["resattn_resnet164_cifar"] == 164 and depths["resattn_resnet1001_cifar"] == 1001
    # ImageNet modules per stage (1,1,1) and (1,2,3); 452 is p=2, t=4, r=3 with 6 modules per stage
    assert [s.num_modules for s in resattn.get_variant("resattn92").stages] == [1, 2, 3, 0]
    s452 = resattn.get_variant("resattn452_cifar")
    assert (s452.num_pre_units, s452.num_trunk_units, s452.units_per_level) == (2, 4, 3)
    assert [s.num_modules for s in s452.stages] == [6, 6, 6]


def test_attention56_has_18_trunk_units() -> None:
    """docs/paper.md §3.3: 6 standalone + 3 modules x 4 units = 18 residual units on the trunk path."""
    with torch.device("meta"):
        net = ResidualAttentionNet("resattn56")
    trunk_units = [n for n, m in net.named_modules() if isinstance(m, PreActBottleneck) and ".mask." not in f".{n}."]
    assert len(trunk_units) == 18


# --- size ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params_m"),
    [
        ("resattn56", 31.81),  # docs/paper.md §3.2, counted from the prototxt
        ("resattn92", 52.47),
        ("resattnext56", 31.32),
        ("resattn92_cifar", 1.84),  # docs/paper.md §4
        ("resattn_resnet164_cifar", 1.70),
        ("resattn_resnet1001_cifar", 10.33),
    ],
)
def test_parameter_counts(name: str, params_m: float) -> None:
    with torch.device("meta"):
        net = ResidualAttentionNet(name)
    assert n_params(net) / 1e6 == pytest.approx(params_m, rel=0.005)


def test_attention56_against_paper_table2() -> None:
    spec = resattn.get_variant("resattn56")
    net = ResidualAttentionNet("resattn56")
    assert n_params(net) / 1e6 == pytest.approx(spec.paper_params_m, rel=0.01)  # 31.9 M
    macs = gmacs(net, (224, 224))
    assert macs == pytest.approx(6.27, rel=0.01)  # docs/paper.md §3.2
    assert macs == pytest.approx(spec.paper_gflops, rel=0.03)  # Table 2: 6.2 G (multiply-adds)


def test_attention92_gmacs() -> None:
    assert gmacs(ResidualAttentionNet("resattn92"), (224, 224)) == pytest.approx(10.53, rel=0.01)


def test_mask_share_of_attention56() -> None:
    """docs/paper.md §3.2: 6.96 M of Attention-56's parameters sit in the masks."""
    with torch.device("meta"):
        net = ResidualAttentionNet("resattn56")
    mask = sum(n_params(m.mask) for _, m in net.attention_modules())
    assert mask / 1e6 == pytest.approx(6.96, rel=0.005)


def test_local_mask_network() -> None:
    """Table 4's local-convolution mask: no pooling, FLOP-matched unit count, similar whole-network cost."""
    local = ResidualAttentionNet("resattn56_cifar", mask_structure="local").eval()
    hourglass = ResidualAttentionNet("resattn56_cifar").eval()
    for (_, m), stage in zip(local.attention_modules(), local.spec.stages, strict=True):
        assert isinstance(m.mask.body, LocalMask)
        assert len(m.mask.body.units) == flop_matched_local_units(stage.mask_pools)
    assert not any(isinstance(m, nn.MaxPool2d) for m in local.modules())
    with torch.no_grad():
        assert local(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    ratio = gmacs(local, (32, 32)) / gmacs(hourglass, (32, 32))
    assert 0.7 < ratio < 1.3


# --- attention settings reach every module ---------------------------------------------------------
@pytest.mark.parametrize("mask_type", ["mixed", "channel", "spatial"])
@pytest.mark.parametrize("residual", [True, False])
def test_attention_settings_propagate(mask_type: str, residual: bool) -> None:
    net = ResidualAttentionNet("resattn_tiny_cifar", mask_type=mask_type, attention_residual=residual).eval()
    modules = [m for _, m in net.attention_modules()]
    assert len(modules) == 3
    assert all(m.mask.activation.mask_type == mask_type and m.attention_residual is residual for m in modules)
    with torch.no_grad():
        assert torch.isfinite(net(torch.randn(2, 3, 16, 16))).all()


def test_variant_overrides() -> None:
    net = ResidualAttentionNet("resattn_tiny_cifar", units_per_level=2, num_classes=7)
    module = next(m for _, m in net.attention_modules())
    assert [len(d) for d in module.mask.body.down] == [2, 2, 4]
    assert net.spec.units_per_level == 2 and net.num_classes == 7
    assert resattn.get_variant("resattn_tiny_cifar").units_per_level == 1  # the table is untouched


# --- gradients -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "size", "kwargs"),
    [
        ("resattn_tiny_cifar", 32, {}),
        ("resattn_tiny_cifar", 16, {"mask_type": "spatial", "attention_residual": False}),
        ("resattn_tiny_cifar", 16, {"mask_type": "channel"}),
        ("resattn_tiny", 64, {}),
        ("resattnext56_cifar", 16, {}),
        ("resattninception56_cifar", 16, {}),
    ],
)
def test_gradients_reach_every_parameter(name: str, size: int, kwargs: dict) -> None:
    net = ResidualAttentionNet(name, **kwargs).train()
    x = torch.randn(2, 3, size, size)
    F.cross_entropy(net(x), torch.tensor([0, 1])).backward()
    params = dict(net.named_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params.values())
    # with the default (random) init nothing is cut off: every tensor gets a nonzero gradient
    zero = [n for n, p in params.items() if not p.grad.abs().sum() > 0]
    assert zero == []


def test_zero_init_last_silences_exactly_the_residual_branches() -> None:
    """With every residual branch ending in a zero conv, the layers *inside* the branches get no gradient
    (their output is multiplied by zero), while the zeroed convs themselves, the shortcuts, the stem, the
    mask tails and the head do. This is the legitimate way for a gradient to be zero."""
    net = ResidualAttentionNet("resattn_tiny_cifar", zero_init_last=True).train()
    F.cross_entropy(net(torch.randn(2, 3, 16, 16)), torch.tensor([0, 1])).backward()
    inside_branch = re.compile(r"\.(conv1|conv2|act1\.0|act2\.0)\.(weight|bias)$")
    for name, p in net.named_parameters():
        if inside_branch.search(name):
            assert torch.count_nonzero(p.grad) == 0, name
        elif name.endswith("conv3.weight") or name.startswith(("stem", "head", "norm")) or ".tail." in name:
            assert torch.count_nonzero(p.grad) > 0, name


def test_zero_init_last_zeroes_every_unit() -> None:
    net = ResidualAttentionNet("resattn_tiny_cifar", zero_init_last=True)
    units = [m for m in net.modules() if isinstance(m, PreActBottleneck)]
    assert units and all(torch.count_nonzero(u.conv3.weight) == 0 for u in units)
    nxt = ResidualAttentionNet("resattnext56_cifar", zero_init_last=True)
    nxt_units = [m for m in nxt.modules() if isinstance(m, ResNeXtBottleneck)]
    assert nxt_units and all(torch.count_nonzero(u.bn3.weight) == 0 for u in nxt_units)
    default = ResidualAttentionNet("resattn_tiny_cifar")
    assert all(torch.count_nonzero(m.conv3.weight) > 0 for m in default.modules() if isinstance(m, PreActBottleneck))


# --- mask capture ----------------------------------------------------------------------------------
def test_capture_masks() -> None:
    net = ResidualAttentionNet("resattn_tiny").train()  # batch statistics keep the fresh masks unsaturated
    trunk_shapes: dict[str, torch.Size] = {}
    handles = [
        m.trunk.register_forward_hook(lambda _m, _i, out, key=n: trunk_shapes.__setitem__(key, out.shape))
        for n, m in net.attention_modules()
    ]
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad(), net.capture_masks() as masks:
        net(x)
    for h in handles:
        h.remove()
    names = [n for n, _ in net.attention_modules()]
    assert list(masks) == names == ["stages.0.attention.0", "stages.1.attention.0", "stages.2.attention.0"]
    for name, mask in masks.items():
        assert mask.shape == trunk_shapes[name]
        assert mask.min() > 0 and mask.max() < 1 and mask.std() > 0  # mixed: sigmoid
    # the hooks are gone afterwards
    assert all(len(m.mask._forward_hooks) == 0 for _, m in net.attention_modules())
    with torch.no_grad():
        net(x)
    assert len(masks) == 3


def test_capture_masks_matches_the_module_mask() -> None:
    net = ResidualAttentionNet("resattn_tiny_cifar", mask_type="spatial").eval()
    x = torch.randn(1, 3, 16, 16)
    module: AttentionModule = net.stages[1].attention[0]
    inputs: list[torch.Tensor] = []
    module.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    with torch.no_grad(), net.capture_masks() as masks:
        net(x)
        expected = module.mask(module.pre(inputs[0]))
    torch.testing.assert_close(masks["stages.1.attention.0"], expected)


def test_replacing_masks_by_themselves_changes_nothing() -> None:
    net = ResidualAttentionNet("resattn_tiny_cifar").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = net(x)
        with net.replace_masks(lambda _name, mask: mask):
            assert torch.equal(net(x), expected)  # bitwise
    assert all(len(m.mask._forward_hooks) == 0 for _, m in net.attention_modules())


def test_zero_masks_silence_the_trunk_under_nal() -> None:
    net = ResidualAttentionNet("resattn_tiny_cifar", attention_residual=False).eval()
    fused: dict[str, torch.Tensor] = {}
    for name, module in net.attention_modules():  # the post units' input is the fused (M * T)
        module.post.register_forward_pre_hook(lambda _m, args, key=name: fused.__setitem__(key, args[0]))
    seen: list[str] = []

    def zeros(name: str, mask: torch.Tensor) -> torch.Tensor:
        seen.append(name)
        return torch.zeros_like(mask)

    with torch.no_grad(), net.replace_masks(zeros), net.capture_masks() as masks:
        net(torch.randn(2, 3, 16, 16))
    assert seen == list(fused) == list(masks) == [name for name, _ in net.attention_modules()]
    assert all(torch.count_nonzero(f) == 0 for f in fused.values())
    assert all(torch.count_nonzero(m) == 0 for m in masks.values())  # capture sees the mask applied


def test_a_replacement_broadcasts_to_the_mask_or_is_refused() -> None:
    net = ResidualAttentionNet("resattn_tiny_cifar").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad(), net.capture_masks() as own:
        net(x)
    means = {name: m.mean(dim=(0, 2, 3), keepdim=True) for name, m in own.items()}
    with torch.no_grad(), net.replace_masks(lambda name, _m: means[name]), net.capture_masks() as applied:
        net(x)
    for name, mask in applied.items():
        assert mask.shape == own[name].shape
        torch.testing.assert_close(mask, means[name].expand_as(mask))
    with (
        pytest.raises(ValueError, match=r"stages\.0\.attention\.0's mask \(2, 16, 16, 16\) is \(3,\); it must"),
        net.replace_masks(lambda _name, _m: torch.zeros(3)),
    ):
        net(x)


@pytest.mark.parametrize("mask_type", ["mixed", "spatial", "channel"])
def test_mask_logits_give_the_mask(mask_type: str) -> None:
    net = ResidualAttentionNet("resattn_tiny_cifar", mask_type=mask_type).train()
    with torch.no_grad(), net.capture_masks() as masks, net.capture_mask_logits() as logits:
        net(torch.randn(2, 3, 16, 16))
    assert list(logits) == list(masks)
    for name, mask in masks.items():
        z = logits[name]
        if mask_type == "channel":
            torch.testing.assert_close(mask, z * torch.rsqrt(z.pow(2).sum(dim=1, keepdim=True) + 1e-5))
        else:
            assert torch.equal(torch.sigmoid(z), mask)
        if mask_type == "spatial":  # standardised within each channel
            torch.testing.assert_close(
                z.flatten(2).std(dim=2, correction=0), torch.ones(z.shape[:2]), atol=1e-3, rtol=0
            )
    assert all(len(m.mask.activation._forward_hooks) == 0 for _, m in net.attention_modules())


# --- bad input -------------------------------------------------------------------------------------
def test_unknown_variant() -> None:
    with pytest.raises(KeyError, match=r"unknown resattn variant 'resattn999'.*resattn56, .*resattn_tiny_cifar"):
        resattn.get_variant("resattn999")
    with pytest.raises(KeyError, match="known variants"):
        ResidualAttentionNet("resattn999")


def test_wrong_channel_count_names_both_counts() -> None:
    net = ResidualAttentionNet("resattn_tiny_cifar").eval()
    with pytest.raises(ValueError, match=r"expected 3 input channel\(s\), got 1"):
        net(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\), got a tensor of shape \(3, 32, 32\)"):
        net(torch.randn(3, 32, 32))


def test_scripted_and_traced_networks_keep_the_input_checks() -> None:
    """TorchScript and FX (timm's marks its checks so that FX records them as one call) keep the same messages;
    the outputs stay those of the eager network."""
    net = ResidualAttentionNet("resattn_tiny").eval()
    scripted, traced = torch.jit.script(net), torch.fx.symbolic_trace(net)
    x = torch.randn(2, 3, 33, 40)
    with torch.no_grad():
        expected = net(x)
        torch.testing.assert_close(scripted(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(traced(x), expected, rtol=0, atol=0)
    bad = [
        (torch.randn(1, 3, 30, 64), r"input of size \(30, 64\) is too small: .* at least 31x31 pixels"),
        (torch.randn(1, 1, 40, 40), r"expected 3 input channel\(s\), got 1 \(input shape \(1, 1, 40, 40\)\)"),
        (torch.randn(3, 40, 40), r"\(N, C, H, W\), got a tensor of shape \(3, 40, 40\)"),
    ]
    for image, message in bad:
        for model in (net, traced):
            with pytest.raises(ValueError, match=message):
                model(image)
        with pytest.raises(torch.jit.Error, match=f"ValueError: .*{message}"):
            scripted(image)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"mask_type": "soft"}, ValueError, r"unknown mask_type 'soft'; accepted: \['mixed', 'channel', 'spatial'\]"),
        ({"mask_structure": "unet"}, ValueError, r"unknown mask structure 'unet'; accepted: \['hourglass', 'local'\]"),
        ({"unit_type": "basic"}, ValueError, r"unknown unit_type 'basic'; accepted: \['inception', 'plain', 'preact'"),
        ({"depth": 3}, TypeError, r"unknown variant field\(s\) \['depth'\]; accepted: .*'num_pre_units'"),
        ({"global_pool": "max"}, ValueError, r"unsupported global_pool 'max'"),
    ],
)
def test_bad_settings(kwargs: dict, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        ResidualAttentionNet("resattn_tiny_cifar", **kwargs)


def test_local_mask_has_no_pooling_size_limit() -> None:
    net = timm.create_model("resattn_tiny_cifar", mask_structure="local").eval()
    assert net.min_input_size() == 1
    with torch.no_grad():
        assert net(torch.randn(1, 3, 5, 7)).shape == (1, 10)
