"""ResidualAttentionNet: stem, stages of units and attention modules, final norm, head (docs/paper.md §3, §4).

Follows timm's model interface: ``forward_features`` returns unpooled maps, ``forward_head`` pools and
classifies, top-level children are ``stem``, ``stages``, ``norm`` and ``head`` so that
``timm.create_model(name, features_only=True)`` works; ``forward_intermediates`` and
``prune_intermediate_layers`` serve timm's feature getter. Every forward path scripts (TorchScript), traces
(FX, torch.compile) and exports (``torch.export``, ONNX). No ``from __future__ import annotations`` here: FX
copies ``forward``'s annotations into the traced code, which TorchScript must then resolve.
"""

from contextlib import nullcontext

import torch
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from resattn.attention import AttentionModule
from resattn.head import ClassifierHead, check_head
from resattn.mask import pooled_size
from resattn.mask_access import MaskAccess
from resattn.stem import Stem
from resattn.units import BNReLU, unit_class
from resattn.variants import StageSpec, VariantSpec, variant_from_config

# forward_intermediates' results: intermediates; (final, intermediates); and either with the masks added.
Intermediates = (
    list[torch.Tensor]
    | tuple[torch.Tensor, list[torch.Tensor]]
    | tuple[list[torch.Tensor], dict[str, torch.Tensor]]
    | tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]
)


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

    def forward_with_masks(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The stage's output and the soft mask of each of its attention modules, in order."""
        x = self.units_before(x)
        masks: list[torch.Tensor] = []
        for module in self.attention:
            x, mask = module.forward_with_mask(x)
            masks.append(mask)
        return self.units_after(x), masks


class ResidualAttentionNet(MaskAccess, nn.Module):
    """Residual Attention Network built from a :class:`VariantSpec` (or a registered variant name).

    Args:
        variant: spec or registered name (see :func:`resattn.list_variants`).
        num_classes: classifier outputs (0: no classifier); defaults to the variant's.
        in_chans: input channels.
        mask_type: ``mixed`` (f1), ``channel`` (f2) or ``spatial`` (f3), docs/paper.md §2.
        mask_structure: ``hourglass`` (bottom-up/top-down) or ``local`` (Table 4's local convolutions).
        local_mask_units: units of a local mask; default: as many as cost the hourglass's FLOPs.
        attention_residual: ``True`` for ARL ``(1+M)*T``, ``False`` for NAL ``M*T``.
        drop_rate: dropout before the classifier.
        zero_init_last: zero the last layer of every residual branch (the last BN for post-activation
            units, the last conv for pre-activation ones, which have no BN there); default: the variant's
            (off except for the ResNet-1001 baseline, see variants.py).
        global_pool: ``avg``, or ``""`` for unpooled feature maps out of the head (needs ``num_classes=0``).
        device, dtype: where and in which floating-point type the parameters are created (timm's factory
            arguments; ``device="meta"`` builds the structure without memory).
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
        zero_init_last: bool | None = None,
        global_pool: str = "avg",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **variant_overrides: object,
    ) -> None:
        super().__init__()
        spec = variant_from_config(variant, variant_overrides)
        self.spec = spec
        self.mask_structure = mask_structure
        self.num_classes = spec.num_classes if num_classes is None else num_classes
        check_head(global_pool, self.num_classes)
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        preactivation = unit_class(spec.unit_type).preactivation

        with torch.device(device) if device is not None else nullcontext():
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
            # Pre-activation nets end on a raw residual sum, so they need a last BN-ReLU (docs/paper.md §3.2).
            self.norm = BNReLU(channels) if preactivation else nn.Identity()
            # timm's features_only (flatten_sequential) flattens the BNReLU Sequential into norm_0/norm_1, so the
            # last feature is taken at the ReLU, "norm.1"; an Identity norm stays "norm".
            self.feature_info[-1]["module"] = "norm.1" if preactivation else "norm"
            self.num_features = self.head_hidden_size = channels
            self.head = ClassifierHead(channels, self.num_classes, drop_rate, global_pool)
            self.grad_checkpointing = False
            self.stem.min_input_size = self.min_input_size()
            self._init_weights(spec.zero_init_last if zero_init_last is None else zero_init_last)
        if dtype is not None:
            self.to(dtype=dtype)

    def _init_weights(self, zero_init_last: bool) -> None:
        """He (MSRA) init for convs (docs/paper.md §5.1), unit BN scales, small-normal classifier."""
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
        for stage in self.spec.stages[: len(self.stages)]:  # fewer once pruned
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
        """timm's parameter groups (e.g. layer-wise lr decay): the stem, then each stage (``coarse``) or each
        unit and attention module in forward order; the final norm and the head come last.

        timm orders groups by the numbers a pattern captures; a stage's three runs of modules are named, not
        numbered, so the fine groups are listed one pattern each, numbered in forward order.
        """
        if coarse:
            return dict(stem=r"^stem", blocks=r"^stages\.(\d+)")
        blocks: list[tuple[str, tuple[int]]] = []
        for i, stage in enumerate(self.stages):
            for part in ("units_before", "attention", "units_after"):
                for j in range(len(getattr(stage, part))):
                    blocks.append((rf"^stages\.{i}\.{part}\.{j}\.", (len(blocks),)))
        return dict(stem=r"^stem", blocks=blocks)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new classifier for ``num_classes`` (0: none); ``global_pool=""`` unpooled maps, None: keep it."""
        self.head.reset(num_classes, global_pool, like=self.stem.conv.weight)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if not torch.jit.is_scripting() and self.grad_checkpointing and torch.is_grad_enabled():
            for stage in self.stages:
                x = checkpoint(stage, x, use_reentrant=False)
        else:
            x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
        return_masks: bool = False,
    ) -> Intermediates:
        """Features of the levels in ``feature_info`` (0: stem, i: stage i's output), timm's interface.

        Args:
            indices: ``None`` every level, ``n`` the last n, or a list of levels (negative: from the end).
            norm: apply the final BN-ReLU to the last level's feature (it always ends the final output).
            stop_early: run no stage past the last requested level (eager only; TorchScript runs all).
            output_fmt: only ``NCHW``.
            intermediates_only: return only the list of features.
            return_masks: also return ``{module name: soft mask M}`` of every attention module that ran,
                named as in :meth:`attention_modules`, with gradients (unlike :meth:`capture_masks`).

        Returns:
            ``(final features, intermediates)``, or the intermediates alone; with ``return_masks`` the masks
            dict is appended to the tuple.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got '{output_fmt}'")
        taken, max_index = feature_take_indices(len(self.stages) + 1, indices)
        intermediates: list[torch.Tensor] = []
        masks: dict[str, torch.Tensor] = {}
        x = self.stem(x)
        if 0 in taken:
            intermediates.append(x)
        last = len(self.stages)
        # TorchScript cannot slice a Sequential (scripted, every stage runs), nor take a module from a ternary.
        if torch.jit.is_scripting() or not stop_early:  # noqa: SIM108
            stages = self.stages
        else:
            stages = self.stages[:max_index]
        level = 0
        for level, stage in enumerate(stages, start=1):
            if not torch.jit.is_scripting() and self.grad_checkpointing and torch.is_grad_enabled():
                x, stage_masks = checkpoint(stage.forward_with_masks, x, use_reentrant=False)
            else:
                x, stage_masks = stage.forward_with_masks(x)
            if return_masks:
                for j, mask in enumerate(stage_masks):
                    masks[f"stages.{level - 1}.attention.{j}"] = mask
            if level in taken:
                intermediates.append(self.norm(x) if norm and level == last else x)
        if intermediates_only:
            if return_masks:
                return intermediates, masks
            return intermediates
        if level == last:
            x = self.norm(x)
        if return_masks:
            return x, intermediates, masks
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop what the requested levels do not need (timm's interface); returns their absolute indices.

        Stages after the last requested level go, and with them the final norm and the classifier (they are
        sized for the last stage); ``prune_norm`` drops the norm anyway, ``prune_head`` the classifier.
        """
        taken, max_index = feature_take_indices(len(self.stages) + 1, indices)
        cut_end = max_index < len(self.stages)
        self.stages = self.stages[:max_index]
        if prune_norm or cut_end:
            self.norm = nn.Identity()
        if cut_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
            self.head.num_features = self.num_features
        if prune_head or cut_end:
            self.reset_classifier(0, "")
        self.stem.min_input_size = self.min_input_size()
        return taken
