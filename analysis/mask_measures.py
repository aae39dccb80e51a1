"""The mask measures of one network on one dataset (:mod:`analysis.mask_effects`: importance, localisation,
amplitude), from the command line and for results documents.

    python -m analysis.mask_measures --ckpt logs/.../checkpoints/last.ckpt [--data NAME] [--set key=value ...]
        [--split test|val] [--num-images N] [--batch-size B] [--measures importance amplitude localisation]
        [--out FILE.json]
    python -m analysis.mask_measures --pretrained resattn56_cifar.fmnist --data fashion_mnist

The command takes the network from a checkpoint (data from its run config, as ``python -m analysis.masks``) or a
pretrained tag (``--data`` names its data), writes every measure to a JSON file (default
``<run>/mask_measures.json``, ``logs/mask_measures/<tag>.json`` for a tag) and prints a short table
(:func:`text_table`). Localisation runs when the data gives boxes (a datamodule with ``boxes(split)``, e.g.
cluttered Fashion-MNIST). :func:`measure` is what both the command and ``python -m analysis.results`` run;
:func:`measures_markdown` renders its result for a document.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.errors import HydraException
from torch import nn
from torch.utils.data import DataLoader, Subset

from analysis.mask_effects import MEASURES, amplitude, importance, localisation
from analysis.network_choice import add_network_arguments, attention_network, output_path
from datamodules.base import ImageDataModule
from lightning_modules.mask_plots import module_label
from resattn.checkpoints import CheckpointError


def batch_size_without_singles(num_images: int, batch_size: int) -> int:
    """``batch_size``, or the next larger one that does not leave a last batch of one image (no exchange there)."""
    size = batch_size
    while num_images > 1 and num_images % size == 1:
        size += 1
    return size


def measure(
    model: nn.Module,
    datamodule: ImageDataModule,
    *,
    split: str = "test",
    num_images: int | None = None,
    batch_size: int = 256,
    measures: Sequence[str] = MEASURES,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """The ``measures`` of ``model`` (moved to ``device``, default: CUDA when there is one) on the first
    ``num_images`` images (default: all) of ``datamodule``'s set-up ``split``: ``{"split", "images", "device",
    <measure>: its summary}``. Localisation needs the datamodule's ``boxes(split)``; without them it is None and
    ``localisation_skipped`` says why."""
    if num_images is not None and num_images < 1:
        raise ValueError(f"the number of images must be >= 1, got {num_images}")
    if batch_size < 2:
        raise ValueError(f"the batch size must be >= 2 (masks are exchanged within a batch), got {batch_size}")
    unknown = set(measures) - set(MEASURES)
    if unknown:
        raise ValueError(f"unknown measures {sorted(unknown)}; known: {', '.join(MEASURES)}")
    if split not in ("test", "val"):
        raise ValueError(f"unknown split {split!r}; accepted: test, val")
    dataset = datamodule.test_set if split == "test" else datamodule.val_set
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"the {split} split is empty; use --split test or a data config with that split")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(device)
    count = len(dataset) if num_images is None else min(num_images, len(dataset))
    loader = DataLoader(Subset(dataset, range(count)), batch_size=batch_size_without_singles(count, batch_size))
    measured: dict[str, Any] = {"split": split, "images": count, "device": str(device)}
    if "importance" in measures:
        measured["importance"] = importance(model, loader).summary()
    if "amplitude" in measures:
        measured["amplitude"] = amplitude(model, loader)
    if "localisation" in measures:
        if hasattr(datamodule, "boxes"):
            measured["localisation"] = localisation(model, loader, datamodule.boxes(split)[:count]).summary()
        else:
            measured["localisation"] = None
            measured["localisation_skipped"] = f"{type(datamodule).__name__} gives no object boxes"
    return measured


def _intervention_label(name: str) -> str:
    """``mean:stages.0.attention.0`` -> ``mean mask, stage 1, module 1``; ``exchange:all`` -> ``masks exchanged,
    all``."""
    kind, module = name.split(":", 1)
    return f"{'mean mask' if kind == 'mean' else 'masks exchanged'}, {module_label(module)}"


def text_table(measured: dict[str, Any]) -> str:
    """The measures as a few aligned lines (the command's output)."""
    lines = []
    if "importance" in measured:
        found = measured["importance"]
        lines += [
            f"importance: top-1 of the real network {found['top1']:.2f} % over {found['images']} images",
            f"  {'intervention':<34} {'top-1 %':>8} {'change':>7} {'only real/only int.':>20} {'McNemar p':>10}",
        ]
        for name, row in found["interventions"].items():
            pair = f"{row['only_real']}/{row['only_intervened']}"
            lines.append(
                f"  {_intervention_label(name):<34} {row['top1']:>8.2f} {row['change']:>+7.2f} {pair:>20} "
                f"{row['p_value']:>10.3g}"
            )
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
            f"  {'module':<18} {'mass in box':>11} {'pointing hits':>13} {'low mass in box':>15} "
            f"{'low pointing hits':>17} {'flat channels':>13}"
        )
        for name, row in found["modules"].items():
            lines.append(
                f"  {module_label(name):<18} {row['mass_in_box']:>11.3f} {row['pointing_hits']:>13.3f} "
                f"{row['low_mass_in_box']:>15.3f} {row['low_pointing_hits']:>17.3f} {row['flat_channels']:>13.3f}"
            )
    if measured.get("localisation_skipped"):
        lines.append(f"localisation: skipped, {measured['localisation_skipped']}")
    return "\n".join(lines)


IMPORTANCE_READING = (
    "Importance: top-1 with masks replaced, paired image by image with the real network (McNemar's exact test on "
    "the images exactly one of the two gets right); a mean mask carries no information about its image, so a drop "
    "means the network uses what its masks say about each image, and no change means it does not."
)
AMPLITUDE_READING = (
    "Amplitude: the spread of the mask logits (before the sigmoid) and the range over which the mask scales the trunk "
    "(5th–95th percentile of 1 + M under ARL, of M under NAL); a narrow range means the mask acts as a nearly "
    "constant factor, whatever its pattern looks like in the grid."
)
LOCALISATION_READING = (
    "Localisation: the share of each mask's above-mean mass inside the object's box, and how often the "
    "channel-mean mask's maximum falls in the box (pointing game); chance for both is the box's mean share of the "
    "canvas, so only values above it say that the mask points at the object. A mask can also mark the object by "
    "being low on it (scaling the object's features less than the rest): the same two measures on the below-mean "
    "mass and the minimum ('low') say whether it does."
)


def measures_markdown(measured: dict[str, Any], explain: bool = True) -> str:
    """The measures as markdown tables for a document, each led by a sentence on how to read it (``explain``) or by
    its name alone (where a document says how to read them once for several networks: :data:`READINGS`)."""

    def lead(name: str) -> str:
        return READINGS[name] if explain else f"{name.capitalize()}:"

    parts = []
    if "importance" in measured:
        found = measured["importance"]
        lines = [
            lead("importance"),
            "",
            "| masks | top-1 % | change, points | right only with real / only with replaced | McNemar p |",
            "|---|---|---|---|---|",
            f"| real | {found['top1']:.2f} | | | |",
        ]
        for name, row in found["interventions"].items():
            lines.append(
                f"| {_intervention_label(name)} | {row['top1']:.2f} | {row['change']:+.2f} | "
                f"{row['only_real']} / {row['only_intervened']} | {row['p_value']:.3g} |"
            )
        parts.append("\n".join(lines))
    if "amplitude" in measured:
        lines = [
            lead("amplitude"),
            "",
            "| module | C×H×W | logit std | logit std over positions | M, 5th–95th percentile | trunk scale |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in measured["amplitude"].items():
            low, high = row["trunk_scale"]
            lines.append(
                f"| {module_label(name)} | {row['channels']}×{row['height']}×{row['width']} | {row['logit_std']:.3f} "
                f"| {row['logit_spatial_std']:.3f} | {row['p05']:.3f}–{row['p95']:.3f} | {low:.3f}–{high:.3f} |"
            )
        parts.append("\n".join(lines))
    if measured.get("localisation"):
        found = measured["localisation"]
        lines = [
            f"{lead('localisation')} Chance here: {found['box_share']:.3f}.",
            "",
            "| module | mass in box | pointing hits | low: mass in box | low: pointing hits | flat channels "
            "(counted as chance) |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in found["modules"].items():
            lines.append(
                f"| {module_label(name)} | {row['mass_in_box']:.3f} | {row['pointing_hits']:.3f} "
                f"| {row['low_mass_in_box']:.3f} | {row['low_pointing_hits']:.3f} | {row['flat_channels']:.3f} |"
            )
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


READINGS = {"importance": IMPORTANCE_READING, "amplitude": AMPLITUDE_READING, "localisation": LOCALISATION_READING}

# --- command line ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.mask_measures",
        description="Whether a network uses its attention masks, where they point and how far they move the trunk.",
    )
    add_network_arguments(parser)
    parser.add_argument("--split", default="test", choices=["test", "val"], help="split to measure on")
    parser.add_argument("--num-images", type=int, help="the first N images of the split (default: all)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--measures", nargs="+", default=list(MEASURES), choices=MEASURES)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when there is one)")
    parser.add_argument("--out", help="JSON file (default: <run>/mask_measures.json, logs/mask_measures/<tag>.json)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables for a document, not text")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the measures as JSON and print them."""
    args = _parser().parse_args(argv)
    started = time.perf_counter()
    try:
        if args.num_images is not None and args.num_images < 1:
            raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
        if args.batch_size < 2:
            raise ValueError(f"--batch-size must be >= 2 (masks are exchanged within a batch), got {args.batch_size}")
        model, datamodule = attention_network(args)
        measured = measure(
            model,
            datamodule,
            split=args.split,
            num_images=args.num_images,
            batch_size=args.batch_size,
            measures=args.measures,
            device=args.device,
        )
    except (ValueError, TypeError, OSError, CheckpointError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else output_path(args, "mask_measures.json")
    command = shlex.join(["python", "-m", "analysis.mask_measures", *(argv if argv is not None else sys.argv[1:])])
    document = {
        "command": command,
        "network": args.ckpt or args.pretrained,
        "data": type(datamodule).__name__,
        **{key: measured.pop(key) for key in ("split", "images", "device")},
        "seconds": round(time.perf_counter() - started, 1),
        **measured,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(measures_markdown(measured) if args.markdown else text_table(measured))
    print(f"wrote {out} ({document['images']} {args.split} images, {document['seconds']} s on {document['device']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
