"""The mask measures themselves (docs/paper.md §1.4, §2): does a network use its attention masks, do they point at
the object, and how far can they move the trunk? The command and the document renderers are
:mod:`analysis.mask_measures`.

- **Importance** (:func:`importance`): test top-1 with each attention module's mask M replaced by its per-channel
  mean (over the evaluated images and positions), with every module's at once, and with the masks exchanged
  between images (image i gets image i-1's masks of the real network, within each batch, for all modules at once).
  Each is paired image by image with the real network: McNemar's exact test (:func:`analysis.paired.mcnemar_p`) on
  the images exactly one of the two gets right. A mask that carries no information about its image costs nothing
  when replaced by its mean, however large its spread.
- **Localisation** (:func:`localisation`, on data with object boxes): each mask upsampled to the input
  (bilinear, as the grids draw it); per image and channel, the share of its above-mean mass, the sum of
  ``(M - mean M)+`` over positions, that lies inside the object's box, against the box's share of the canvas
  (chance); and the pointing game: how often the channel-mean mask's maximum falls inside the box, against the
  same chance. A mask can mark the object by being low on it as well as high (it then scales the object's
  features less than the rest): the same two measures on the below-mean mass ``(mean M - M)+`` and on the
  channel-mean mask's minimum say whether it does.
- **Amplitude** (:func:`amplitude`): the spread of each mask's logits (before the sigmoid squashes them) over
  everything and over positions within a channel, and the 5th-95th percentile range of M with the trunk scaling
  it gives, ``1 + M`` under ARL, ``M`` under NAL (:class:`lightning_modules.mask_plots.MaskStatistics`).

The functions take a network (an ImageClassifier or a ResidualAttentionNet) and a DataLoader of ``(images,
labels)`` batches in a fixed order, and run in float32 where the network's parameters are (CPU or GPU), in eval
mode (the network's mode is restored).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from analysis.paired import mcnemar_p
from lightning_modules.mask_plots import MaskStatistics, has_attention_modules, upsampled

MEASURES = ("importance", "amplitude", "localisation")
FLAT = 1e-6  # upsampled mask values this close count as equal: float32 rounding of the interpolation


def _attention_net(model: nn.Module) -> nn.Module:
    """The network with the attention modules (``model.net`` of an ImageClassifier); an error without any."""
    net = getattr(model, "net", model)
    if not has_attention_modules(net):
        raise ValueError(f"{type(net).__name__} has no attention modules: it has no masks to measure")
    return net


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode without gradients (its mode restored afterwards); yields its attention network."""
    net = _attention_net(model)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield net
    finally:
        model.train(training)


def _batches(model: nn.Module, loader: Iterable[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` of each batch, on the device of ``model``'s parameters."""
    device = next(model.parameters()).device
    count = 0
    for batch in loader:
        if not isinstance(batch, (list, tuple)) or len(batch) < 2 or not isinstance(batch[0], torch.Tensor):
            raise ValueError(f"the loader must give (images, labels) batches, got {type(batch).__name__}")
        count += 1
        yield batch[0].to(device), torch.as_tensor(batch[1]).to(device)
    if count == 0:
        raise ValueError("the loader gave no images")


@dataclass(frozen=True)
class Importance:
    """Per-image correctness (bool, in the loader's order) of the real network and of each intervention on its
    masks: ``mean:<module>`` (that module's mask replaced by its per-channel mean), ``mean:all`` (every module's)
    and ``exchange:all`` (every module's mask taken from another image)."""

    real: torch.Tensor
    interventions: dict[str, torch.Tensor]

    def summary(self) -> dict[str, Any]:
        """Top-1 of each, its change in points against the real network, and the paired test."""
        n = len(self.real)
        rows = {}
        for name, correct in self.interventions.items():
            only_real, only_intervened = int((self.real & ~correct).sum()), int((~self.real & correct).sum())
            rows[name] = {
                "top1": 100 * correct.float().mean().item(),
                "change": 100 * (int(correct.sum()) - int(self.real.sum())) / n,
                "only_real": only_real,
                "only_intervened": only_intervened,
                "p_value": mcnemar_p(only_real, only_intervened),
            }
        return {"images": n, "top1": 100 * self.real.float().mean().item(), "interventions": rows}


def importance(model: nn.Module, loader: Iterable[Any]) -> Importance:
    """Whether the network uses its masks: correctness with the masks replaced (see :class:`Importance`).

    Two passes over ``loader``, which must give the same images in the same order each time: the first gives the
    real network's correctness and each module's per-channel mean mask over all images and positions, the second
    the interventions. The exchange gives image i the masks image i-1 of its batch gets in the real network (a
    cyclic shift, so no image keeps its own): every batch needs two images or more.
    """
    with _evaluating(model) as net:
        names = [name for name, _ in net.attention_modules()]
        sums: dict[str, torch.Tensor] = {}
        counts = dict.fromkeys(names, 0)
        real, labels_seen = [], []
        for images, labels in _batches(model, loader):
            with net.capture_masks() as masks:
                real.append((model(images).argmax(dim=1) == labels).cpu())
            labels_seen.append(labels.cpu())
            for name, mask in masks.items():
                sums[name] = sums.get(name, 0) + mask.double().sum(dim=(0, 2, 3))
                counts[name] += mask.numel() // mask.shape[1]
        means = {name: (sums[name] / counts[name]).float().view(1, -1, 1, 1) for name in names}

        def mean_of(only: str | None) -> Callable[[str, torch.Tensor], torch.Tensor]:
            return lambda key, mask: means[key].to(mask) if only in (None, key) else mask

        interventions: dict[str, list[torch.Tensor]] = {f"mean:{name}": [] for name in names}
        interventions |= {"mean:all": [], "exchange:all": []}
        for index, (images, labels) in enumerate(_batches(model, loader)):
            if index >= len(labels_seen) or not torch.equal(labels.cpu(), labels_seen[index]):
                raise ValueError("the loader gave other images on its second pass: it must not shuffle")
            if len(images) < 2:
                raise ValueError(
                    "exchanging masks between images needs batches of 2 or more images; the loader gave a batch of "
                    "1 (choose a batch size that leaves no single image at the end, or drop_last)"
                )

            def correct(
                fn: Callable[[str, torch.Tensor], torch.Tensor],
                images: torch.Tensor = images,
                labels: torch.Tensor = labels,
            ) -> torch.Tensor:
                with net.replace_masks(fn):
                    return (model(images).argmax(dim=1) == labels).cpu()

            for name in names:
                interventions[f"mean:{name}"].append(correct(mean_of(name)))
            interventions["mean:all"].append(correct(mean_of(None)))
            with net.capture_masks() as own:
                model(images)
            interventions["exchange:all"].append(correct(lambda key, _mask, own=own: own[key].roll(1, dims=0)))
        if len(interventions["mean:all"]) != len(labels_seen):
            raise ValueError("the loader gave fewer batches on its second pass: it must give the same images")
    return Importance(torch.cat(real), {key: torch.cat(value) for key, value in interventions.items()})


@dataclass(frozen=True)
class Localisation:
    """Where the masks put their weight, against where the object is (see :func:`localisation`)."""

    images: int
    box_share: float  # mean share of the canvas inside the box: chance for both measures
    mass_in_box: dict[str, float]  # per module: mean share of above-mean mask mass inside the box
    pointing_hits: dict[str, float]  # per module: how often the channel-mean mask's maximum is inside the box
    low_mass_in_box: dict[str, float]  # the same for the below-mean mass
    low_pointing_hits: dict[str, float]  # the same for the channel-mean mask's minimum
    flat_channels: dict[str, float]  # per module: share of (image, channel) masks flat to FLAT (counted as chance)

    def summary(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "box_share": self.box_share,
            "modules": {
                name: {
                    "mass_in_box": self.mass_in_box[name],
                    "pointing_hits": self.pointing_hits[name],
                    "low_mass_in_box": self.low_mass_in_box[name],
                    "low_pointing_hits": self.low_pointing_hits[name],
                    "flat_channels": self.flat_channels[name],
                }
                for name in self.mass_in_box
            },
        }


def checked_boxes(boxes: torch.Tensor, start: int, count: int, height: int, width: int) -> torch.Tensor:
    """Rows ``start:start+count`` of ``boxes`` for a batch of ``count`` images of ``height x width``, checked."""
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) rows (x0, y0, x1, y1), got shape {tuple(boxes.shape)}")
    if start + count > len(boxes):
        raise ValueError(f"boxes has {len(boxes)} rows but the loader gave more images: one box per image")
    rows = boxes[start : start + count].to(torch.long)
    x0, y0, x1, y1 = rows.unbind(dim=1)
    bad = (x0 < 0) | (y0 < 0) | (x1 > width) | (y1 > height) | (x1 <= x0) | (y1 <= y0)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"box {start + i} {rows[i].tolist()} is not a box of a {width}x{height} image: x0 < x1 <= {width} and "
            f"y0 < y1 <= {height}, from 0, in input pixels with exclusive ends"
        )
    return rows


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(N, 1, H, W)`` bool: the pixels inside each box ``(x0, y0, x1, y1)`` (ends exclusive)."""
    xs = torch.arange(width, device=boxes.device).view(1, 1, width)
    ys = torch.arange(height, device=boxes.device).view(1, height, 1)
    x0, y0, x1, y1 = (v.view(-1, 1, 1) for v in boxes.unbind(dim=1))
    return ((xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)).unsqueeze(1)


def localisation(model: nn.Module, loader: Iterable[Any], boxes: torch.Tensor) -> Localisation:
    """Whether the masks point at the object: ``boxes`` ``(N, 4)``, ``(x0, y0, x1, y1)`` in input pixels with
    exclusive ends, one per image in the loader's order.

    Each mask is upsampled to the input size (bilinear). Mass in box: per image and channel, the above-mean mass
    ``(M - mean M)+`` summed over positions inside the box over that summed everywhere, averaged over images and
    channels; a flat channel (range within ``FLAT``) has no above-mean mass and counts as the box's share, what a
    uniform spread would put there. Pointing game: a hit when the channel-mean mask's maximum is inside the box;
    maxima tied within ``FLAT`` share the hit (a flat mask scores the box's share). Chance for both is the box's
    mean share of the canvas. The ``low_`` measures are the same for the below-mean mass and the minimum.
    """
    with _evaluating(model) as net:
        names = [name for name, _ in net.attention_modules()]
        mass = {side: dict.fromkeys(names, 0.0) for side in ("high", "low")}
        hits = {side: dict.fromkeys(names, 0.0) for side in ("high", "low")}
        flat = dict.fromkeys(names, 0)
        pairs = dict.fromkeys(names, 0)
        seen, box_area = 0, 0.0
        for images, _ in _batches(model, loader):
            height, width = images.shape[-2:]
            rows = checked_boxes(boxes, seen, len(images), height, width).to(images.device)
            inside = box_masks(rows, height, width)
            share = inside.float().mean(dim=(1, 2, 3))
            box_area += share.sum().item()
            with net.capture_masks() as masks:
                model(images)
            for name, mask in masks.items():
                channels = max(1, 2**24 // (mask.shape[0] * height * width))  # upsample a few channels at a time
                for chunk in mask.split(channels, dim=1):
                    up = upsampled(chunk, (height, width))
                    is_flat = (up.amax(dim=(2, 3)) - up.amin(dim=(2, 3))) <= FLAT
                    centred = up - up.mean(dim=(2, 3), keepdim=True)
                    for side, excess in (("high", centred.clamp_min(0)), ("low", (-centred).clamp_min(0))):
                        within = (excess * inside).sum(dim=(2, 3)) / excess.sum(dim=(2, 3)).clamp_min(1e-30)
                        mass[side][name] += torch.where(is_flat, share[:, None], within).double().sum().item()
                    flat[name] += int(is_flat.sum())
                    pairs[name] += is_flat.numel()
                heat = upsampled(mask.float().mean(dim=1, keepdim=True), (height, width))
                extremes = {
                    "high": heat >= heat.amax(dim=(2, 3), keepdim=True) - FLAT,
                    "low": heat <= heat.amin(dim=(2, 3), keepdim=True) + FLAT,
                }
                for side, at in extremes.items():
                    in_box = (at & inside).sum(dim=(1, 2, 3)) / at.sum(dim=(1, 2, 3))
                    hits[side][name] += in_box.double().sum().item()
            seen += len(images)
    if seen != len(boxes):
        raise ValueError(f"boxes has {len(boxes)} rows but the loader gave {seen} images: one box per image")
    return Localisation(
        images=seen,
        box_share=box_area / seen,
        mass_in_box={name: mass["high"][name] / pairs[name] for name in names},
        pointing_hits={name: hits["high"][name] / seen for name in names},
        low_mass_in_box={name: mass["low"][name] / pairs[name] for name in names},
        low_pointing_hits={name: hits["low"][name] / seen for name in names},
        flat_channels={name: flat[name] / pairs[name] for name in names},
    )


def amplitude(model: nn.Module, loader: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """How far each module's mask can move its trunk: ``{module name: statistics}``, the
    :class:`~lightning_modules.mask_plots.MaskStatistics` of its masks and logits over every image (``logit_std``,
    ``logit_spatial_std``, ``p05``, ``p95``, ...), plus ``trunk_scale``, the 5th-95th percentile range of what
    multiplies the trunk (``1 + M`` under ARL, ``M`` under NAL), its ``attention`` (ARL or NAL) and ``mask_type``
    (what the logits are: :meth:`resattn.mask.MaskActivation.logits`)."""
    with _evaluating(model) as net:
        modules = dict(net.attention_modules())
        stats = {name: MaskStatistics() for name in modules}
        for images, _ in _batches(model, loader):
            with net.capture_masks() as masks, net.capture_mask_logits() as logits:
                model(images)
            for name, mask in masks.items():
                stats[name].update(mask, logits[name])
    results = {}
    for name, accumulated in stats.items():
        module = modules[name]
        result: dict[str, Any] = accumulated.result()
        offset = 1.0 if module.attention_residual else 0.0
        result["trunk_scale"] = [offset + result["p05"], offset + result["p95"]]
        result["attention"] = "ARL" if module.attention_residual else "NAL"
        result["mask_type"] = module.mask.activation.mask_type
        results[name] = result
    return results
