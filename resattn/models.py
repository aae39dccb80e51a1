"""timm registration: one ``@register_model`` entry point and one default cfg per row of VARIANTS.

The entry points are generated from the table (no function per depth is written by hand); each is a
real module-level function, so timm's registry, ``list_models("resattn*")`` and ``pretrained_cfg``
(including ``pretrained_cfg_overlay=dict(file=...)`` for local weights) work as for timm's own models. Trained
weights are pretrained tags, ``<variant>.<tag>`` (:mod:`resattn.pretrained`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from input_conventions import CIFAR10_MEAN, CIFAR_STD, EVAL_CROP_FRACTION, IMAGENET_MEAN, IMAGENET_STD
from resattn.net import ResidualAttentionNet
from resattn.pretrained import available, timm_cfg
from resattn.variants import VARIANTS, VariantSpec


def _default_cfg(spec: VariantSpec, input_size: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """timm's pretrained cfg of ``spec`` at ``input_size`` (default: the variant's), ``pool_size`` included (the last
    feature map: stride 32 for ImageNet layouts, 4 for CIFAR ones).

    ``mean``, ``std`` and ``crop_pct`` are what training uses, so that ``timm.data.resolve_data_config`` and
    ``create_transform`` prepare images as the datamodules do: ImageNet's statistics and single crop; for a CIFAR
    layout, CIFAR-10's channel means and no std division (training subtracts the per-pixel mean image, whose
    channel averages these are, docs/paper.md §5.1), uncropped. A tag replaces them with its own data's
    (:func:`resattn.pretrained.timm_cfg`)."""
    imagenet = spec.family == "imagenet"
    input_size = input_size or spec.input_size
    size = input_size[-1]
    return dict(
        url="",
        num_classes=spec.num_classes,
        input_size=input_size,
        pool_size=(-(-size // 32),) * 2 if imagenet else (size // 4,) * 2,
        crop_pct=EVAL_CROP_FRACTION if imagenet else 1.0,
        interpolation="bilinear",
        mean=IMAGENET_MEAN if imagenet else CIFAR10_MEAN,
        std=IMAGENET_STD if imagenet else CIFAR_STD,
        first_conv="stem.conv",
        classifier="head.fc",
        license="apache-2.0",
        paper_ids="arXiv:1704.06904",
        paper_name="Residual Attention Network for Image Classification",
    )


# The pretrained tags found in the weights folders (pretrained.py), then one untagged cfg per variant, marked as the
# default with timm's '*'. Without the mark timm makes a variant's first tag with weights its default, and
# timm.create_model("resattn56_cifar") would build the 1-channel, 10-class network of the Fashion-MNIST tag.
default_cfgs = generate_default_cfgs(
    {
        **{tag: {**_default_cfg(VARIANTS[w.variant], w.input_size), **timm_cfg(w)} for tag, w in available().items()},
        **{f"{name}.*": _default_cfg(spec) for name, spec in VARIANTS.items()},
    }
)


def _tag_of(pretrained_cfg: Any) -> str | None:
    """The tag that timm's ``create_model`` passes on: ``"fmnist"`` of ``"resattn56_cifar.fmnist"``, or a cfg's."""
    if isinstance(pretrained_cfg, str):
        return pretrained_cfg
    if isinstance(pretrained_cfg, dict):
        return pretrained_cfg.get("tag")
    return getattr(pretrained_cfg, "tag", None)


def create_resattn(variant: str, pretrained: bool = False, **kwargs: Any) -> ResidualAttentionNet:
    """Build a registered variant through timm's builder (pretrained cfg, features_only, overlays). A tag builds the
    network its weights were trained as: its network options (NAL, widths, mask type: the tag's ``net``) are the
    defaults, which explicit keyword arguments override."""
    tag = _tag_of(kwargs.get("pretrained_cfg"))
    weights = available().get(f"{variant}.{tag}") if tag else None  # the weights folders are read only for a tag
    kwargs = {**(weights.net if weights else {}), **kwargs}
    out_indices = kwargs.pop("out_indices", tuple(range(len(VARIANTS[variant].stages) + 1)))
    return build_model_with_cfg(
        partial(ResidualAttentionNet, variant),
        variant,
        pretrained,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def _entry_point(name: str) -> Callable[..., ResidualAttentionNet]:
    def entry(pretrained: bool = False, **kwargs: Any) -> ResidualAttentionNet:
        return create_resattn(name, pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = __name__
    entry.__doc__ = f"{name}: trunk depth {VARIANTS[name].depth}, {VARIANTS[name].family} layout."
    return entry


for _name in VARIANTS:
    globals()[_name] = register_model(_entry_point(_name))
