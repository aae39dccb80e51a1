"""Drawing the soft masks M of a Residual Attention Network over its input images (docs/paper.md §1.4, §2 f1/f2/f3).

One grid, one row per image: the image as the network sees it (min-max scaled), then one column per attention
module (labelled with its stage and module) with the module's mask averaged over channels, bilinearly upsampled to
the image size and overlaid as a heat map (colour range per panel, written under it). The training callback
(:class:`lightning_modules.callbacks.AttentionMaskLogger`) and the command line (``python -m analysis.masks``)
draw the same grid with these functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def attention_network(model: nn.Module) -> nn.Module:
    """The network holding the attention modules: ``model.net`` of an ImageClassifier, or ``model`` itself."""
    net = getattr(model, "net", model)
    if not hasattr(net, "capture_masks"):
        raise TypeError(f"{type(net).__name__} is not a Residual Attention Network (it has no capture_masks())")
    return net


def has_attention_modules(model: nn.Module) -> bool:
    """Whether ``model`` (or its ``net``) has at least one attention module: False for other networks and for the
    pre-activation ResNets built from the same stage spec, which have ``capture_masks`` but nothing to capture."""
    net = getattr(model, "net", model)
    return hasattr(net, "attention_modules") and next(iter(net.attention_modules()), None) is not None


@torch.no_grad()
def captured_masks(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{module name: M (N, C, H, W)}`` of every attention module, from one forward pass of ``model`` over
    ``images`` (in its current train/eval mode)."""
    with attention_network(model).capture_masks() as masks:
        model(images)
    return masks


def heatmaps_from(masks: Mapping[str, torch.Tensor], size: Sequence[int]) -> dict[str, torch.Tensor]:
    """``{module name: (N, H, W)}``: each captured mask M (:func:`captured_masks`) averaged over channels and
    bilinearly upsampled to ``size`` (the images' ``(H, W)``)."""
    heatmaps = {}
    for name, mask in masks.items():
        mean = mask.float().mean(dim=1, keepdim=True)
        heatmaps[name] = F.interpolate(mean, size=tuple(size), mode="bilinear", align_corners=False)[:, 0].cpu()
    return heatmaps


def mask_heatmaps(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`heatmaps_from` the masks of ``model`` over ``images``, at the images' size."""
    return heatmaps_from(captured_masks(model, images), images.shape[-2:])


def statistics_from(masks: Mapping[str, torch.Tensor]) -> dict[str, dict[str, float]]:
    """``{module name: statistics}`` of each captured mask M (:func:`captured_masks`): its shape ``(C, H, W)``, mean
    and std over all values, the std over positions within a channel (averaged over images and channels: how much
    the mask varies across space), and the share of values outside [0.4, 0.6] (how much of it departs from a flat
    sigmoid(0) = 0.5)."""
    stats = {}
    for name, mask in masks.items():
        m = mask.float()
        stats[name] = {
            "channels": m.shape[1],
            "height": m.shape[2],
            "width": m.shape[3],
            "mean": m.mean().item(),
            "std": m.std().item(),
            "spatial_std": m.flatten(2).std(dim=2).mean().item() if m.shape[2] * m.shape[3] > 1 else 0.0,
            "outside": ((m - 0.5).abs() > 0.1).float().mean().item(),
        }
    return stats


def mask_statistics(model: nn.Module, images: torch.Tensor) -> dict[str, dict[str, float]]:
    """:func:`statistics_from` the masks of ``model`` over ``images``."""
    return statistics_from(captured_masks(model, images))


def stage_module(name: str) -> tuple[int, int]:
    """``stages.1.attention.0`` -> ``(2, 1)``: an attention module's stage and its place in the stage, 1-based as in
    the paper's figures."""
    found = re.fullmatch(r"stages\.(\d+)\.attention\.(\d+)", name)
    if found is None:
        raise ValueError(f"{name!r} is not an attention module's name (stages.<i>.attention.<j>)")
    return int(found[1]) + 1, int(found[2]) + 1


def module_label(name: str) -> str:
    """``stages.1.attention.0`` -> ``stage 2, module 1``; other names stay as they are."""
    try:
        stage, module = stage_module(name)
    except ValueError:
        return name
    return f"stage {stage}, module {module}"


def display_image(image: torch.Tensor) -> np.ndarray:
    """A network input ``(C, H, W)`` scaled to [0, 1] for display: ``(H, W)`` for 1 channel, ``(H, W, 3)`` else."""
    x = image.detach().float().cpu()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)
    return x[0].numpy() if x.shape[0] == 1 else x[:3].permute(1, 2, 0).numpy()


def mask_figure(
    images: torch.Tensor,
    heatmaps: Mapping[str, torch.Tensor],
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """The grid: per row an image then its heat maps (``heatmaps`` from :func:`mask_heatmaps`), one column each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(heatmaps)
    rows, cols = images.shape[0], 1 + len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows + 0.8), squeeze=False)
    for i in range(rows):
        picture = display_image(images[i])
        cmap = "gray" if picture.ndim == 2 else None
        axes[i, 0].imshow(picture, cmap=cmap)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
        for j, name in enumerate(names, start=1):
            heat = heatmaps[name][i].numpy()
            axes[i, j].imshow(picture, cmap=cmap)
            axes[i, j].imshow(heat, cmap="jet", alpha=0.5, vmin=float(heat.min()), vmax=float(heat.max()))
            axes[i, j].set_xlabel(f"[{heat.min():.3f}, {heat.max():.3f}]", fontsize=7)
    axes[0, 0].set_title("input", fontsize=8)
    for j, name in enumerate(names, start=1):
        axes[0, j].set_title(f"{module_label(name)}\n{name}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "attention masks M (mean over channels), heat map over the input", fontsize=9)
    fig.tight_layout()
    return fig


def figure_rgb(fig: Figure) -> np.ndarray:
    """The rendered figure as an ``(H, W, 3)`` uint8 array (for W&B)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG (parents created) and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
