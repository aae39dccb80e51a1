"""ResidualAttentionNet: stem, stages of units and attention modules, final norm, head (PAPER.md §3, §4).

Follows timm's model interface: ``forward_features`` returns unpooled maps, ``forward_head`` pools and
classifies, top-level children are ``stem``, ``stages``, ``norm`` and ``head`` so that
``timm.create_model(name, features_only=True)`` works.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint_sequential

from resattn.attention import AttentionModule
from resattn.mask import pooled_size
from resattn.units import BNReLU, conv3x3, unit_class
from resattn.variants import StageSpec, VariantSpec, variant_from_config


class Stem(nn.Module):
    """ImageNet: 7x7/2 conv, BN-ReLU, 3x3/2 max-pool (Caffe ceil mode). CIFAR: 3x3 conv (+BN-ReLU when the
    units are post-activation). Also checks the input, because every path (features_only too) starts here."""

    def __init__(self, family: str, in_chans: int, out_channels: int, preactivation: bool) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.min_input_size = 1
        if family == "imagenet":
            self.conv = nn.Conv2d(in_chans, out_channels, 7, stride=2, padding=3, bias=False)
            self.act: nn.Module = BNReLU(out_channels)
            self.pool: nn.Module = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
            self.reduction = 4
        else:
            self.conv = conv3x3(in_chans, out_channels)
            self.act = nn.Identity() if preactivation else BNReLU(out_channels)
            self.pool = nn.Identity()
            self.reduction = 1

    def output_size(self, size: int) -> int:
        if self.reduction == 1:
            return size
        return pooled_size((size - 1) // 2 + 1)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4:
            raise ValueError(f"expected a batch of images (N, C, H, W), got a tensor of shape {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} input channel(s), got {x.shape[1]} (input shape {tuple(x.shape)}); "
                f"build the model with in_chans={x.shape[1]} or convert the images"
            )
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"input of size {tuple(x.shape[-2:])} is too small: the deepest attention mask needs at least "
                f"{self.min_input_size}x{self.min_input_size} pixels"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.pool(self.act(self.conv(x)))


class Stage(nn.Module):
    """Standalone units (the first sets width and stride), attention modules, standalone units."""

    def __init__(self, spec: StageSpec, in_channels: int, variant: VariantSpec, **attention: object) -> None:
        super().__init__()
        cls = unit_class(variant.unit_type)
        width = spec.out_channels
        self.units_before = nn.Sequential(
            cls(in_channels, width, spec.stride), *(cls(width, width) for _ in range(spec.units_before - 1))
        )
        self.attention = nn.Sequential(
            *(
                AttentionModule(
                    variant.unit_type,
                    width,
                    spec.mask_pools,
                    num_pre_units=variant.num_pre_units,
                    num_trunk_units=variant.num_trunk_units,
                    units_per_level=variant.units_per_level,
                    **attention,
                )
                for _ in range(spec.num_modules)
            )
        )
        self.units_after = nn.Sequential(*(cls(width, width) for _ in range(spec.units_after)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units_after(self.attention(self.units_before(x)))


class ClassifierHead(nn.Module):
    """Global average pooling, dropout, linear classifier (``num_classes=0`` gives pooled features)."""

    def __init__(self, num_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.fc(x)


class ResidualAttentionNet(nn.Module):
    """Residual Attention Network built from a :class:`VariantSpec` (or a registered variant name).

    Args:
        variant: spec or registered name (see :func:`resattn.list_variants`).
        num_classes: classifier outputs (0: no classifier); defaults to the variant's.
        in_chans: input channels.
        mask_type: ``mixed`` (f1), ``channel`` (f2) or ``spatial`` (f3), PAPER.md §2.
        mask_structure: ``hourglass`` (bottom-up/top-down) or ``local`` (Table 4's local convolutions).
        local_mask_units: units of a local mask; default: as many as cost the hourglass's FLOPs.
        attention_residual: ``True`` for ARL ``(1+M)*T``, ``False`` for NAL ``M*T``.
        drop_rate: dropout before the classifier.
        zero_init_last: zero the last layer of every residual branch (the last BN for post-activation
            units, the last conv for pre-activation ones, which have no BN there).
        **variant_overrides: any :class:`VariantSpec` field, e.g. ``units_per_level=2`` or ``stages=[...]``.
    """

    def __init__(
        self,
        variant: VariantSpec | str,
        num_classes: int | None = None,
        in_chans: int = 3,
        mask_type: str = "mixed",
        mask_structure: str = "hourglass",
        local_mask_units: int | None = None,
        attention_residual: bool = True,
        drop_rate: float = 0.0,
        zero_init_last: bool = False,
        global_pool: str = "avg",
        **variant_overrides: object,
    ) -> None:
        super().__init__()
        spec = variant_from_config(variant, variant_overrides)
        if global_pool != "avg":
            raise ValueError(f"unsupported global_pool {global_pool!r}; accepted: ['avg']")
        self.spec = spec
        self.mask_structure = mask_structure
        self.num_classes = spec.num_classes if num_classes is None else num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        preactivation = unit_class(spec.unit_type).preactivation

        self.stem = Stem(spec.family, in_chans, spec.stem_channels, preactivation)
        stages, channels, reduction = [], spec.stem_channels, self.stem.reduction
        self.feature_info = [dict(num_chs=channels, reduction=reduction, module="stem")]
        attention = dict(
            mask_type=mask_type,
            mask_structure=mask_structure,
            local_mask_units=local_mask_units,
            attention_residual=attention_residual,
        )
        for i, stage_spec in enumerate(spec.stages):
            stages.append(Stage(stage_spec, channels, spec, **attention))
            channels, reduction = stage_spec.out_channels, reduction * stage_spec.stride
            self.feature_info.append(dict(num_chs=channels, reduction=reduction, module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        # Pre-activation nets end on a raw residual sum, so they need a last BN-ReLU (PAPER.md §3.2).
        self.norm = BNReLU(channels) if preactivation else nn.Identity()
        # timm's features_only (flatten_sequential) flattens the BNReLU Sequential into norm_0/norm_1, so the
        # last feature is taken at the ReLU, "norm.1"; an Identity norm stays "norm".
        self.feature_info[-1]["module"] = "norm.1" if preactivation else "norm"
        self.num_features = self.head_hidden_size = channels
        self.head = ClassifierHead(channels, self.num_classes, drop_rate)
        self.grad_checkpointing = False
        self.stem.min_input_size = self.min_input_size()
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        """He (MSRA) init for convs (PAPER.md §5.1), unit BN scales, small-normal classifier."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    def _sizes_fit(self, size: int) -> bool:
        """Whether an input side of ``size`` keeps every mask pooling input at >= 2 pixels."""
        size = self.stem.output_size(size)
        for stage in self.spec.stages:
            size = (size - 1) // stage.stride + 1
            pooled = size
            pools = stage.mask_pools if stage.num_modules and self.mask_structure == "hourglass" else 0
            for _ in range(pools):
                if pooled < 2:
                    return False
                pooled = pooled_size(pooled)
        return True

    def min_input_size(self) -> int:
        """Smallest input side the network accepts (the deepest mask must still be able to pool)."""
        size = 1
        while not self._sizes_fit(size):
            size += 1
        return size

    # timm interface -----------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, object]:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\w+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"unsupported global_pool {global_pool!r}; accepted: ['avg']")
        self.num_classes = num_classes
        self.head = ClassifierHead(self.num_features, num_classes, self.drop_rate)
        if isinstance(self.head.fc, nn.Linear):
            nn.init.normal_(self.head.fc.weight, std=0.01)
            nn.init.zeros_(self.head.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and torch.is_grad_enabled():
            x = checkpoint_sequential(self.stages, len(self.stages), x, use_reentrant=False)
        else:
            x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # attention inspection -----------------------------------------------------------------------
    def attention_modules(self) -> Iterator[tuple[str, AttentionModule]]:
        """``(name, module)`` for every attention module, in forward order (e.g. ``stages.0.attention.0``)."""
        for name, module in self.named_modules():
            if isinstance(module, AttentionModule):
                yield name, module

    @contextmanager
    def capture_masks(self) -> Iterator[Mapping[str, torch.Tensor]]:
        """Collect the soft masks M of every forward pass run inside the block.

        ``with net.capture_masks() as masks: net(x)`` fills ``masks`` with ``{module name: M}``, detached,
        shaped like the module's trunk output. Hooks are removed on exit, so nothing is kept otherwise.
        """
        masks: dict[str, torch.Tensor] = {}
        handles = [
            module.mask.register_forward_hook(lambda _mod, _inp, out, key=name: masks.__setitem__(key, out.detach()))
            for name, module in self.attention_modules()
        ]
        try:
            yield masks
        finally:
            for handle in handles:
                handle.remove()
