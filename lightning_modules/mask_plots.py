"""Drawing the soft masks M of a Residual Attention Network over its input images (docs/paper.md §1.4, §2 f1/f2/f3).

One grid, one row per image: the image as the network sees it (min-max scaled), then one column per attention
module (labelled with its stage and module) with the module's mask averaged over channels, bilinearly upsampled to
the image size and overlaid as a heat map (one colour scale for the whole grid, shown by a colour bar; each panel's
own range written under it). The training callback
(:class:`lightning_modules.callbacks.AttentionMaskLogger`) and the command line (``python -m analysis.masks``)
draw the same grid with these functions, and measure how far the masks move the trunk (:class:`MaskStatistics`,
also used by :mod:`analysis.mask_effects`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.figures import pyplot

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


@torch.no_grad()
def captured_masks_and_logits(
    model: nn.Module, images: torch.Tensor
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """:func:`captured_masks` and the masks' logits (``capture_mask_logits``), from the same forward pass."""
    net = attention_network(model)
    with net.capture_masks() as masks, net.capture_mask_logits() as logits:
        model(images)
    return masks, logits


def upsampled(masks: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(N, C, h, w)`` maps bilinearly resized to the images' ``(H, W)``, in float32, where they are drawn."""
    return F.interpolate(masks.float(), size=tuple(size), mode="bilinear", align_corners=False)


def heatmaps_from(masks: Mapping[str, torch.Tensor], size: Sequence[int]) -> dict[str, torch.Tensor]:
    """``{module name: (N, H, W)}``: each captured mask M (:func:`captured_masks`) averaged over channels and
    bilinearly upsampled to ``size`` (the images' ``(H, W)``)."""
    return {name: upsampled(mask.float().mean(dim=1, keepdim=True), size)[:, 0].cpu() for name, mask in masks.items()}


def mask_heatmaps(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`heatmaps_from` the masks of ``model`` over ``images``, at the images' size."""
    return heatmaps_from(captured_masks(model, images), images.shape[-2:])


class _Moments:
    """Running count, mean and standard deviation (n - 1) of many values, in float64, shifted by the first batch's
    mean so that a small spread around a large mean keeps its digits."""

    def __init__(self) -> None:
        self.count, self.shift, self.total, self.squares = 0, 0.0, 0.0, 0.0

    def update(self, values: torch.Tensor) -> None:
        x = values.detach().double()
        if self.count == 0:
            self.shift = x.mean().item()
        x = x - self.shift
        self.count += x.numel()
        self.total += x.sum().item()
        self.squares += x.square().sum().item()

    @property
    def mean(self) -> float:
        return self.shift + self.total / self.count

    @property
    def std(self) -> float:
        if self.count < 2:
            return 0.0
        return max(0.0, (self.squares - self.total**2 / self.count) / (self.count - 1)) ** 0.5


class MaskStatistics:
    """How far one attention module's masks move its trunk, over any number of batches (:meth:`update`).

    :meth:`result` gives the mask's shape ``channels``, ``height``, ``width``; ``mean`` and ``std`` of all values of
    M; ``spatial_std``, the std over positions within a channel (averaged over images and channels: how much the
    mask varies across space); the same two for the logits (``logit_std``, ``logit_spatial_std``,
    ``capture_mask_logits``: for the sigmoid masks, the spread before the sigmoid squashes it); and ``p05``, ``p95``
    and ``range = p95 - p05`` of M, the range over which the mask scales the trunk, ``(1 + M) T`` or ``M T``
    (percentiles from a histogram over [-1, 1], every mask type's range, to within 2e-5). Stds are over n - 1.
    """

    BINS = 2**16
    CHUNK = 2**24  # values per histogram call: its float32 counts stay exact

    def __init__(self) -> None:
        self.shape: tuple[int, int, int] | None = None
        self._mask, self._logits = _Moments(), _Moments()
        self._spatial = {"mask": [0.0, 0], "logits": [0.0, 0]}  # summed per-(image, channel) stds, their count
        self._histogram = torch.zeros(self.BINS, dtype=torch.float64)

    def update(self, mask: torch.Tensor, logits: torch.Tensor) -> None:
        """Add a batch of masks ``(N, C, H, W)`` and their logits (same shape)."""
        if mask.shape != logits.shape:
            raise ValueError(f"masks {tuple(mask.shape)} and logits {tuple(logits.shape)} differ in shape")
        if self.shape is None:
            self.shape = tuple(mask.shape[1:])
        self._mask.update(mask)
        self._logits.update(logits)
        for key, values in (("mask", mask), ("logits", logits)):
            flat = values.detach().float().flatten(2)
            if flat.shape[2] > 1:
                self._spatial[key][0] += flat.std(dim=2).double().sum().item()
            self._spatial[key][1] += flat.shape[0] * flat.shape[1]
        for chunk in mask.detach().float().flatten().split(self.CHUNK):
            self._histogram += torch.histc(chunk.clamp(-1, 1), bins=self.BINS, min=-1, max=1).double().cpu()

    def percentile(self, q: float) -> float:
        """The value below which a share ``q`` of M's values lie (the centre of the histogram bin it falls in)."""
        cumulative = self._histogram.cumsum(0)
        index = int(torch.searchsorted(cumulative, q * cumulative[-1]).clamp_max(self.BINS - 1))
        return -1 + (index + 0.5) * 2 / self.BINS

    def result(self) -> dict[str, float]:
        if self.shape is None:
            raise ValueError("MaskStatistics has seen no masks")
        p05, p95 = self.percentile(0.05), self.percentile(0.95)
        return {
            "channels": self.shape[0],
            "height": self.shape[1],
            "width": self.shape[2],
            "mean": self._mask.mean,
            "std": self._mask.std,
            "spatial_std": self._spatial["mask"][0] / self._spatial["mask"][1],
            "logit_std": self._logits.std,
            "logit_spatial_std": self._spatial["logits"][0] / self._spatial["logits"][1],
            "p05": p05,
            "p95": p95,
            "range": p95 - p05,
        }


def statistics_from(
    masks: Mapping[str, torch.Tensor], logits: Mapping[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    """``{module name: MaskStatistics' result}`` of captured masks and logits (:func:`captured_masks_and_logits`)."""
    stats = {}
    for name, mask in masks.items():
        accumulated = MaskStatistics()
        accumulated.update(mask, logits[name])
        stats[name] = accumulated.result()
    return stats


def mask_statistics(model: nn.Module, images: torch.Tensor) -> dict[str, dict[str, float]]:
    """:func:`statistics_from` the masks and logits of ``model`` over ``images``."""
    return statistics_from(*captured_masks_and_logits(model, images))


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
    boxes: torch.Tensor | None = None,
) -> Figure:
    """The grid: per row an image then its heat maps (``heatmaps`` from :func:`mask_heatmaps`), one column each.

    Every heat map shares one colour scale, the range of all of them, shown by the colour bar under the grid, so a
    flat mask looks flat (each panel's own range is written under it). ``boxes`` ``(N, 4)``, ``(x0, y0, x1, y1)``
    in image pixels with exclusive ends, draws each image's object box on its row.
    """
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    plt = pyplot()

    names = list(heatmaps)
    rows, cols = images.shape[0], 1 + len(names)
    if boxes is not None and tuple(boxes.shape) != (rows, 4):
        raise ValueError(f"boxes must be ({rows}, 4), one (x0, y0, x1, y1) per image, got {tuple(boxes.shape)}")
    low = min((float(heat.min()) for heat in heatmaps.values()), default=0.0)
    high = max((float(heat.max()) for heat in heatmaps.values()), default=1.0)
    norm = Normalize(vmin=low, vmax=max(high, low + 1e-6))  # a constant mask still gets a scale
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows + 1.2), squeeze=False, layout="constrained")
    for i in range(rows):
        picture = display_image(images[i])
        cmap = "gray" if picture.ndim == 2 else None
        axes[i, 0].imshow(picture, cmap=cmap)
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
        for j, name in enumerate(names, start=1):
            heat = heatmaps[name][i].numpy()
            axes[i, j].imshow(picture, cmap=cmap)
            axes[i, j].imshow(heat, cmap="jet", alpha=0.5, norm=norm)
            axes[i, j].set_xlabel(f"[{heat.min():.4g}, {heat.max():.4g}]", fontsize=7)
        if boxes is not None:
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            for ax in axes[i]:  # pixel centres sit at integers: a pixel's edges are half a pixel away
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="white", lw=1))
    axes[0, 0].set_title("input", fontsize=8)
    for j, name in enumerate(names, start=1):
        axes[0, j].set_title(f"{module_label(name)}\n{name}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "attention masks M (mean over channels), heat map over the input", fontsize=9)
    bar = fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap="jet"),
        ax=axes,
        location="bottom",
        shrink=0.6,
        aspect=40,
        ticks=[norm.vmin, norm.vmax],
    )
    bar.ax.set_xticklabels([f"{norm.vmin:.4g}", f"{norm.vmax:.4g}"], fontsize=7)
    bar.set_label("channel-mean M, one scale for every panel", fontsize=7)
    return fig


def figure_rgb(fig: Figure) -> np.ndarray:
    """The rendered figure as an ``(H, W, 3)`` uint8 array (for W&B)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
