"""Every named network as data: one :class:`VariantSpec` row per variant (docs/paper.md §3, §4).

A variant is a stem, a list of stages and the attention hyper-parameters p, t, r. A stage is a run of
standalone units (the first one changes width and stride), ``num_modules`` attention modules whose
masks pool ``mask_pools`` times, and optional standalone units after them.

Trunk depth (docs/paper.md §3.3) counts the weighted layers on the trunk path: the stem conv, three per
standalone unit, ``3 * (2p + t)`` per attention module and the classifier; mask layers and projection
shortcuts are excluded. For every attention variant that is ``3 * (2p + t) * modules + 20``. The plain CNN
baseline's units are one conv each, so they count one layer each (``trunk_layers`` of the unit class).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from input_conventions import FAMILIES
from resattn.units import unit_class


@dataclass(frozen=True)
class StageSpec:
    """One stage: ``units_before`` standalone units, ``num_modules`` attention modules, ``units_after``."""

    out_channels: int
    stride: int
    num_modules: int = 0
    mask_pools: int = 0
    units_before: int = 1
    units_after: int = 0

    def __post_init__(self) -> None:
        if self.units_before < 1:
            raise ValueError("a stage needs at least one standalone unit before its modules (it sets the width)")
        if self.num_modules and self.mask_pools < 0:
            raise ValueError(f"mask_pools must be >= 0, got {self.mask_pools}")


@dataclass(frozen=True)
class VariantSpec:
    """A named network: family (stem and input size), stages, unit type and p/t/r."""

    name: str
    family: str
    stages: tuple[StageSpec, ...]
    stem_channels: int
    unit_type: str = "preact"
    num_pre_units: int = 1  # p
    num_trunk_units: int = 2  # t
    units_per_level: int = 1  # r
    # Default of the network's zero_init_last (explicit settings, as the training configs make, win).
    zero_init_last: bool = False
    num_classes: int = 1000
    input_size: tuple[int, int, int] = (3, 224, 224)
    paper_params_m: float | None = None
    paper_gflops: float | None = None
    paper_source: str = ""
    tags: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; accepted: {list(FAMILIES)}")
        stages = tuple(s if isinstance(s, StageSpec) else StageSpec(**s) for s in self.stages)
        object.__setattr__(self, "stages", stages)

    @property
    def num_modules(self) -> int:
        return sum(s.num_modules for s in self.stages)

    @property
    def num_standalone_units(self) -> int:
        return sum(s.units_before + s.units_after for s in self.stages)

    @property
    def layers_per_unit(self) -> int:
        """Weighted layers of one unit on the trunk path: 3 for the residual units, 1 for the plain one."""
        return unit_class(self.unit_type).trunk_layers

    @property
    def layers_per_module(self) -> int:
        """``3 * (2p + t)``: each module adds p pre, t trunk and p post units (of ``layers_per_unit`` layers each)."""
        return self.layers_per_unit * (2 * self.num_pre_units + self.num_trunk_units)

    @property
    def depth(self) -> int:
        """Trunk depth: stem conv + 3 (plain units: 1) per standalone unit + 3(2p+t) per module + classifier."""
        return 1 + self.layers_per_unit * self.num_standalone_units + self.layers_per_module * self.num_modules + 1

    @property
    def num_features(self) -> int:
        return self.stages[-1].out_channels

    @property
    def widths(self) -> tuple[int, ...]:
        """Each stage's output channels."""
        return tuple(s.out_channels for s in self.stages)

    def replace(self, **changes: object) -> VariantSpec:
        """A copy with some fields changed; unknown field names list the accepted ones. ``widths`` (one output
        width per stage) rescales the stages and keeps everything else of them, e.g. ``widths=[32, 64, 128]`` for
        a CIFAR variant at half its width."""
        widths = changes.pop("widths", None)
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown variant field(s) {unknown}; accepted: {sorted(known - {'name'} | {'widths'})}")
        spec = dataclasses.replace(self, **changes)
        return spec if widths is None else spec.with_widths(widths)

    def with_widths(self, widths: Sequence[int]) -> VariantSpec:
        """The same layout with each stage's output channels set to ``widths`` (one positive int per stage)."""
        widths = tuple(widths)
        if len(widths) != len(self.stages) or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(
                f"widths={list(widths)} for {self.name!r}: give one positive int per stage, "
                f"{len(self.stages)} in all (its own: {list(self.widths)})"
            )
        stages = tuple(dataclasses.replace(s, out_channels=w) for s, w in zip(self.stages, widths, strict=True))
        return dataclasses.replace(self, stages=stages)


def imagenet_stages(modules: Sequence[int], widths: Sequence[int] = (256, 512, 1024, 2048)) -> tuple[StageSpec, ...]:
    """ImageNet layout (docs/paper.md §3.2): masks pool 3/2/1 times, then 3 plain units at 1/32 resolution."""
    m1, m2, m3 = modules
    w1, w2, w3, w4 = widths
    return (
        StageSpec(w1, 1, m1, 3),
        StageSpec(w2, 2, m2, 2),
        StageSpec(w3, 2, m3, 1),
        StageSpec(w4, 2, 0, 0, units_before=3),
    )


def cifar_stages(
    modules_per_stage: int, widths: Sequence[int] = (64, 128, 256), pools: Sequence[int] = (3, 2, 1)
) -> tuple[StageSpec, ...]:
    """CIFAR layout, docs/paper.md §4's recommended default: 3 stages at 32/16/8 px, m modules each,
    masks pooling 3/2/1 times down to 4x4, two standalone units per stage (a transition unit, stride 2
    in stages 2-3, before the modules and one more unit after them)."""
    return tuple(
        StageSpec(width, 1 if i == 0 else 2, modules_per_stage, pool, units_before=1, units_after=1)
        for i, (width, pool) in enumerate(zip(widths, pools, strict=True))
    )


def resnet_stages(units_per_stage: int, widths: Sequence[int] = (64, 128, 256)) -> tuple[StageSpec, ...]:
    """Pre-activation ResNet (He et al. 2016) CIFAR layout: 9n+2 layers, no attention modules."""
    return tuple(StageSpec(w, 1 if i == 0 else 2, units_before=units_per_stage) for i, w in enumerate(widths))


def plain_stages(widths: Sequence[int] = (32, 64, 128)) -> tuple[StageSpec, ...]:
    """The plain CNN baseline's VGG-like layout: two 3x3 conv-BN-ReLU per stage (the stem's conv is stage 1's
    first), a 2x2 max-pool before stages 2 and 3 (the plain unit's stride), no shortcut, no attention."""
    return tuple(StageSpec(w, 1 if i == 0 else 2, units_before=1 if i == 0 else 2) for i, w in enumerate(widths))


def _imagenet(name: str, modules: Sequence[int], **kw: object) -> VariantSpec:
    return VariantSpec(name, "imagenet", imagenet_stages(modules), stem_channels=64, **kw)


def _cifar(name: str, stages: tuple[StageSpec, ...], stem_channels: int = 16, **kw: object) -> VariantSpec:
    return VariantSpec(name, "cifar", stages, stem_channels, num_classes=10, input_size=(3, 32, 32), **kw)


_TABLE2 = "Table 2"
_TABLE6 = "Table 6"
_TABLE7 = "Table 7 (unverified)"

VARIANTS: dict[str, VariantSpec] = {
    v.name: v
    for v in (
        # ImageNet (docs/paper.md §3). 128/164 continue 92's (m-1, m, m+1) module rule.
        _imagenet("resattn56", (1, 1, 1), paper_params_m=31.9, paper_gflops=6.2, paper_source=_TABLE2),
        _imagenet("resattn92", (1, 2, 3), paper_params_m=51.3, paper_gflops=10.4, paper_source=_TABLE2),
        _imagenet("resattn128", (2, 3, 4)),
        _imagenet("resattn164", (3, 4, 5)),
        _imagenet(
            "resattnext56", (1, 1, 1), unit_type="resnext", paper_params_m=31.9, paper_gflops=6.3, paper_source=_TABLE7
        ),
        _imagenet(
            "resattninception56",
            (1, 1, 1),
            unit_type="inception",
            input_size=(3, 299, 299),
            paper_params_m=31.9,
            paper_gflops=6.3,
            paper_source=_TABLE7,
        ),
        # CIFAR twins (docs/paper.md §4): 36m + 20 with m modules per stage.
        _cifar("resattn56_cifar", cifar_stages(1)),
        _cifar("resattn92_cifar", cifar_stages(2), paper_params_m=1.9, paper_source=_TABLE6),
        _cifar("resattn128_cifar", cifar_stages(3)),
        _cifar("resattn164_cifar", cifar_stages(4)),
        _cifar("resattn236_cifar", cifar_stages(6), paper_params_m=5.1, paper_source=_TABLE6),
        _cifar(
            "resattn452_cifar",
            cifar_stages(6),
            num_pre_units=2,
            num_trunk_units=4,
            units_per_level=3,
            paper_params_m=8.6,
            paper_source=_TABLE6,
        ),
        _cifar("resattnext56_cifar", cifar_stages(1), unit_type="resnext"),
        _cifar("resattninception56_cifar", cifar_stages(1), unit_type="inception"),
        # Pre-activation ResNet baselines of Table 6 (9n + 2 layers).
        _cifar("resattn_resnet164_cifar", resnet_stages(18), paper_params_m=1.7, paper_source=_TABLE6),
        # Fresh, in eval mode (BN still at its initial statistics) each of its 333 units doubles the variance and
        # the output overflows float32; with the residual branches starting at zero, a fresh network gives
        # finite outputs, as timm's model tests require of every model.
        _cifar(
            "resattn_resnet1001_cifar",
            resnet_stages(111),
            zero_init_last=True,
            paper_params_m=10.3,
            paper_source=_TABLE6,
        ),
        # The same family at about Attention-56's parameter count (1.05 M vs 1.03 M; n = 11): Table 6's comparison
        # in miniature (RESULTS.md). Not ImageNet's ResNet-101.
        _cifar("resattn_resnet101_cifar", resnet_stages(11)),
        # A plain small CNN (7 weighted layers, widths 32/64/128, 0.29 M parameters): the baseline without residual
        # units or attention of the cluttered Fashion-MNIST study (conf/data/cluttered_fmnist.yaml).
        _cifar("resattn_plaincnn_cifar", plain_stages(), stem_channels=32, unit_type="plain"),
        # Tiny Attention-56 layouts for tests and smoke runs.
        VariantSpec("resattn_tiny", "imagenet", imagenet_stages((1, 1, 1), (32, 64, 128, 256)), stem_channels=16),
        _cifar("resattn_tiny_cifar", cifar_stages(1, widths=(16, 32, 64)), stem_channels=8),
    )
}


def list_variants(family: str | None = None) -> list[str]:
    """Names of the registered variants, optionally of one family."""
    return sorted(n for n, v in VARIANTS.items() if family is None or v.family == family)


def get_variant(name: str) -> VariantSpec:
    """The variant called ``name``; an unknown name lists the known ones."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise KeyError(f"unknown resattn variant {name!r}; known variants: {', '.join(list_variants())}") from None


def variant_from_config(base: str | VariantSpec, overrides: Mapping[str, object] | None = None) -> VariantSpec:
    """A variant by name (or spec) with field overrides, e.g. ``{"units_per_level": 2}``."""
    spec = get_variant(base) if isinstance(base, str) else base
    return spec.replace(**overrides) if overrides else spec
