"""Mask measures that answer questions (docs/paper.md §1.4, §2): does the network use its attention masks, do they
point at the object, and how far can they move the trunk?

    python -m analysis.mask_measures --ckpt logs/.../checkpoints/last.ckpt [--data NAME] [--set key=value ...]
        [--split test|val] [--num-images N] [--batch-size B] [--measures importance amplitude localisation]
        [--out FILE.json]
    python -m analysis.mask_measures --pretrained resattn56_cifar.fmnist --data fashion_mnist

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
  same chance.
- **Amplitude** (:func:`amplitude`): the spread of each mask's logits (before the sigmoid squashes them) over
  everything and over positions within a channel, and the 5th-95th percentile range of M with the trunk scaling
  it gives, ``1 + M`` under ARL, ``M`` under NAL (:class:`lightning_modules.mask_plots.MaskStatistics`).

The functions take a network (an ImageClassifier or a ResidualAttentionNet) and a DataLoader of ``(images,
labels)`` batches in a fixed order, and run in float32 where the network's parameters are (CPU or GPU), in eval
mode (the network's mode is restored). The command takes the network from a checkpoint (data from its run config,
as ``python -m analysis.masks``) or a pretrained tag (``--data`` names its data), writes every measure to a JSON
file (default ``<run>/mask_measures.json``, ``logs/mask_measures/<tag>.json`` for a tag) and prints a short table.
Localisation runs when the data gives boxes (a datamodule with ``boxes(split)``, e.g. cluttered Fashion-MNIST).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.errors import HydraException
from torch import nn
from torch.utils.data import DataLoader, Subset

from analysis.paired import mcnemar_p
from analysis.run_data import default_output, load_datamodule
from lightning_modules.checkpoint_loading import load_classifier, load_pretrained
from lightning_modules.mask_plots import MaskStatistics, has_attention_modules, module_label, upsampled
from resattn.checkpoints import CheckpointError

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
    flat_channels: dict[str, float]  # per module: share of (image, channel) masks flat to FLAT (counted as chance)

    def summary(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "box_share": self.box_share,
            "modules": {
                name: {
                    "mass_in_box": self.mass_in_box[name],
                    "pointing_hits": self.pointing_hits[name],
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
    mean share of the canvas.
    """
    with _evaluating(model) as net:
        names = [name for name, _ in net.attention_modules()]
        mass = dict.fromkeys(names, 0.0)
        hits = dict.fromkeys(names, 0.0)
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
                    above = (up - up.mean(dim=(2, 3), keepdim=True)).clamp_min(0)
                    within = (above * inside).sum(dim=(2, 3)) / above.sum(dim=(2, 3)).clamp_min(1e-30)
                    mass[name] += torch.where(is_flat, share[:, None], within).double().sum().item()
                    flat[name] += int(is_flat.sum())
                    pairs[name] += is_flat.numel()
                heat = upsampled(mask.float().mean(dim=1, keepdim=True), (height, width))
                top = heat >= heat.amax(dim=(2, 3), keepdim=True) - FLAT
                hits[name] += ((top & inside).sum(dim=(1, 2, 3)) / top.sum(dim=(1, 2, 3))).double().sum().item()
            seen += len(images)
    if seen != len(boxes):
        raise ValueError(f"boxes has {len(boxes)} rows but the loader gave {seen} images: one box per image")
    return Localisation(
        images=seen,
        box_share=box_area / seen,
        mass_in_box={name: mass[name] / pairs[name] for name in names},
        pointing_hits={name: hits[name] / seen for name in names},
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


# --- command line ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.mask_measures",
        description="Whether a network uses its attention masks, where they point and how far they move the trunk.",
    )
    network = parser.add_mutually_exclusive_group(required=True)
    network.add_argument("--ckpt", help="a checkpoint written by train.py")
    network.add_argument("--pretrained", metavar="TAG", help="a pretrained tag, e.g. resattn56_cifar.fmnist")
    parser.add_argument("--data", help="a conf/data/*.yaml name (default: the checkpoint's own run config)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="data config overrides")
    parser.add_argument("--split", default="test", choices=["test", "val"], help="split to measure on")
    parser.add_argument("--num-images", type=int, help="the first N images of the split (default: all)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--measures", nargs="+", default=list(MEASURES), choices=MEASURES)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    parser.add_argument("--out", help="JSON file (default: <run>/mask_measures.json, logs/mask_measures/<tag>.json)")
    return parser


def batch_size_without_singles(num_images: int, batch_size: int) -> int:
    """``batch_size``, or the next larger one that does not leave a last batch of one image (no exchange there)."""
    size = batch_size
    while num_images > 1 and num_images % size == 1:
        size += 1
    return size


def _network_and_data(args: argparse.Namespace) -> tuple[nn.Module, Any]:
    """The network (eval mode) and the set-up datamodule the arguments name."""
    if args.ckpt is not None:
        ckpt = Path(args.ckpt)
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
        datamodule = load_datamodule(ckpt, args.data, args.set)
        model = load_classifier(ckpt, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans)
    else:
        if args.data is None:
            raise ValueError(
                f"--pretrained {args.pretrained} has no run config: name the data it was trained on with --data "
                "(e.g. --data fashion_mnist)"
            )
        datamodule = load_datamodule(None, args.data, args.set)
        model = load_pretrained(args.pretrained, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans)
    if not has_attention_modules(model):
        raise ValueError(f"{model.hparams.arch} has no attention modules: it has no masks to measure")
    return model.eval(), datamodule


def _table(measured: dict[str, Any]) -> str:
    """The JSON's measures as a few aligned lines."""
    lines = []
    if "importance" in measured:
        found = measured["importance"]
        lines += [
            f"importance: top-1 of the real network {found['top1']:.2f} % over {found['images']} images",
            f"  {'intervention':<34} {'top-1 %':>8} {'change':>7} {'only real/only int.':>20} {'McNemar p':>10}",
        ]
        for name, row in found["interventions"].items():
            kind, module = name.split(":", 1)
            label = f"{'mean mask' if kind == 'mean' else 'masks exchanged'}, {module_label(module)}"
            pair = f"{row['only_real']}/{row['only_intervened']}"
            lines.append(f"  {label:<34} {row['top1']:>8.2f} {row['change']:>+7.2f} {pair:>20} {row['p_value']:>10.3g}")
    if "amplitude" in measured:
        lines.append(
            f"amplitude:\n  {'module':<18} {'logit std':>9} {'over positions':>14} {'M 5-95th pct':>15} "
            f"{'trunk scale':>15}"
        )
        for name, row in measured["amplitude"].items():
            low, high = row["trunk_scale"]
            percentiles, scale = f"{row['p05']:.4f}-{row['p95']:.4f}", f"{low:.4f}-{high:.4f}"
            lines.append(
                f"  {module_label(name):<18} {row['logit_std']:>9.4f} {row['logit_spatial_std']:>14.4f} "
                f"{percentiles:>15} {scale:>15}"
            )
    if measured.get("localisation"):
        found = measured["localisation"]
        lines.append(
            f"localisation over {found['images']} images (chance: the box's share {found['box_share']:.3f}):\n"
            f"  {'module':<18} {'mass in box':>11} {'pointing hits':>13} {'flat channels':>13}"
        )
        for name, row in found["modules"].items():
            lines.append(
                f"  {module_label(name):<18} {row['mass_in_box']:>11.3f} {row['pointing_hits']:>13.3f} "
                f"{row['flat_channels']:>13.3f}"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the measures as JSON and print them."""
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        if args.num_images is not None and args.num_images < 1:
            raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
        if args.batch_size < 2:
            raise ValueError(f"--batch-size must be >= 2 (masks are exchanged within a batch), got {args.batch_size}")
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, datamodule = _network_and_data(args)
        model = model.to(device)
        dataset = datamodule.test_set if args.split == "test" else datamodule.val_set
        if dataset is None or len(dataset) == 0:
            raise ValueError(f"the {args.split} split is empty; use --split test or a data config with that split")
        count = len(dataset) if args.num_images is None else min(args.num_images, len(dataset))
        batch_size = batch_size_without_singles(count, args.batch_size)
        loader = DataLoader(Subset(dataset, range(count)), batch_size=batch_size)
        measured: dict[str, Any] = {}
        if "importance" in args.measures:
            measured["importance"] = importance(model, loader).summary()
        if "amplitude" in args.measures:
            measured["amplitude"] = amplitude(model, loader)
        if "localisation" in args.measures:
            if hasattr(datamodule, "boxes"):
                boxes = datamodule.boxes(args.split)[:count]
                measured["localisation"] = localisation(model, loader, boxes).summary()
            else:
                measured["localisation"] = None
                measured["localisation_skipped"] = f"{type(datamodule).__name__} gives no object boxes"
    except (ValueError, TypeError, OSError, CheckpointError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.out:
        out = Path(args.out)
    elif args.ckpt:
        out = default_output(Path(args.ckpt), "mask_measures.json")
    else:
        out = Path("logs") / "mask_measures" / f"{args.pretrained}.json"
    command = shlex.join(["python", "-m", "analysis.mask_measures", *(argv if argv is not None else sys.argv[1:])])
    document = {
        "command": command,
        "network": args.ckpt or args.pretrained,
        "data": type(datamodule).__name__,
        "split": args.split,
        "images": count,
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 1),
        **measured,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(_table(measured))
    if measured.get("localisation_skipped"):
        print(f"localisation: skipped, {measured['localisation_skipped']}")
    print(f"wrote {out} ({count} {args.split} images, {document['seconds']} s on {device})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
