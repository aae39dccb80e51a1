"""Draw the soft mask M of every attention module over the input images (docs/paper.md §1.4 mask branch, §2 f1/f2/f3).

    python -m analysis.masks --ckpt logs/.../checkpoints/last.ckpt [--images a.png my_images/]
        [--data NAME] [--set key=value ...] [--split val|test] [--num-images 8] [--out DIR]

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

from analysis.run_data import default_output, file_images, load_datamodule, split_images
from lightning_modules.checkpoint_loading import load_classifier
from lightning_modules.figures import save_figure
from lightning_modules.mask_plots import mask_figure, mask_heatmaps
from resattn.checkpoints import CheckpointError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.masks",
        description="Draw the attention masks of a checkpoint over images (docs/paper.md §1.4).",
    )
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by train.py")
    parser.add_argument("--images", nargs="+", help="image files or folders (default: the data's --split split)")
    parser.add_argument("--data", help="a conf/data/*.yaml name (default: the checkpoint's own run config)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="data config overrides")
    parser.add_argument("--split", default="val", choices=["val", "test"], help="split to take images from")
    parser.add_argument("--num-images", type=int, default=8, help="number of images (rows)")
    parser.add_argument("--out", help="output folder (default: <run>/masks for <run>/checkpoints/*.ckpt)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write ``<out>/attention_masks.png``."""
    args = _parser().parse_args(argv)
    ckpt = Path(args.ckpt)
    try:
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
        if args.num_images < 1:
            raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
        datamodule = load_datamodule(ckpt, args.data, args.set)
        model = load_classifier(ckpt, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans).eval()
        boxes = None
        if args.images:
            images, labels = file_images(datamodule, args.images, args.num_images)
        else:
            images, labels = split_images(datamodule, args.split, args.num_images)
            if hasattr(datamodule, "boxes"):
                boxes = datamodule.boxes(args.split)[: len(labels)]
        heatmaps = mask_heatmaps(model, images)
        if not heatmaps:
            raise ValueError(f"{model.hparams.arch} has no attention modules: nothing to draw")
    except (ValueError, TypeError, OSError, CheckpointError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else default_output(ckpt, "masks")
    title = f"{model.hparams.arch}: attention masks M (mean over channels) of {ckpt.name}"
    path = save_figure(mask_figure(images, heatmaps, labels, title, boxes), out / "attention_masks.png")
    print(f"wrote {path} ({len(labels)} images x {len(heatmaps)} attention modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
