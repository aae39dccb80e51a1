"""Draw the soft mask M of every attention module over the input images (docs/paper.md §1.4 mask branch, §2 f1/f2/f3).

    python -m analysis.masks --ckpt logs/.../checkpoints/last.ckpt [--data NAME] [--images a.png my_images/]
    python -m analysis.masks --pretrained resattn56_cifar.fmnist --data fashion_mnist
        [--set key=value ...] [--split val|test] [--num-images 8] [--out DIR]

One PNG grid, one row per image: the image as the network sees it (min-max scaled), then one column per attention
module (labelled with its stage and module) with the module's mask averaged over channels, bilinearly upsampled to
the image size and overlaid as a heat map (one colour scale for the grid, shown by a colour bar; each panel's range
written under it). Images are the first ``--num-images`` of the validation (or test) split, with each object's box
drawn when the data gives boxes (a datamodule with ``boxes(split)``), or your own files preprocessed like the test
split. Whether the network uses its masks: ``python -m analysis.mask_measures``. The data
(and so the preprocessing) is the checkpoint's own run config (``<run>/.hydra/config.yaml``) unless ``--data``
names a ``conf/data`` choice. The drawing is :mod:`lightning_modules.mask_plots`, which the training callback
(``callbacks=masks``) uses too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.errors import HydraException

from analysis.network_choice import add_network_arguments, attention_network, output_path
from analysis.run_data import file_images, split_images
from lightning_modules.figures import save_figure
from lightning_modules.mask_plots import mask_figure, mask_heatmaps
from resattn.checkpoints import CheckpointError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.masks",
        description="Draw the attention masks of a checkpoint over images (docs/paper.md §1.4).",
    )
    add_network_arguments(parser)
    parser.add_argument("--images", nargs="+", help="image files or folders (default: the data's --split split)")
    parser.add_argument("--split", default="val", choices=["val", "test"], help="split to take images from")
    parser.add_argument("--num-images", type=int, default=8, help="number of images (rows)")
    parser.add_argument("--out", help="output folder (default: <run>/masks for <run>/checkpoints/*.ckpt)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write ``<out>/attention_masks.png``."""
    args = _parser().parse_args(argv)
    try:
        if args.num_images < 1:
            raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
        model, datamodule = attention_network(args)
        boxes = None
        if args.images:
            images, labels = file_images(datamodule, args.images, args.num_images)
        else:
            images, labels = split_images(datamodule, args.split, args.num_images)
            if hasattr(datamodule, "boxes"):
                boxes = datamodule.boxes(args.split)[: len(labels)]
        heatmaps = mask_heatmaps(model, images)
    except (ValueError, TypeError, OSError, CheckpointError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else output_path(args, "masks")
    source = Path(args.ckpt).name if args.ckpt else f"tag {args.pretrained}"
    title = f"{model.hparams.arch}: attention masks M (mean over channels) of {source}"
    path = save_figure(mask_figure(images, heatmaps, labels, title, boxes), out / "attention_masks.png")
    print(f"wrote {path} ({len(labels)} images x {len(heatmaps)} attention modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
