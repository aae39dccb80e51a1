"""Draw the soft mask M of every attention module over the input images (PAPER.md §1.4 mask branch, §2 f1/f2/f3).

    python -m lightning_modules.visualize --ckpt logs/.../checkpoints/last.ckpt [--images a.png my_images/]
        [--data NAME] [--set key=value ...] [--split val|test] [--num-images 8] [--out DIR]

One PNG grid, one row per image: the image as the network sees it (min-max scaled), then one column per attention
module (labelled with its stage and module) with the module's mask averaged over channels, bilinearly upsampled to
the image size and overlaid as a heat map (colour range per panel, written under it). Images are the first
``--num-images`` of the validation (or test) split, or your own files preprocessed like the test split. The data
(and so the preprocessing) is the checkpoint's own run config (``<run>/.hydra/config.yaml``) unless ``--data``
names a ``conf/data/*.yaml``. :class:`lightning_modules.callbacks.AttentionMaskLogger` draws the same grid during
training.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import functional as TF

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from datamodules.base import ImageDataModule

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"


def attention_network(model: nn.Module) -> nn.Module:
    """The network holding the attention modules: ``model.net`` of an ImageClassifier, or ``model`` itself."""
    net = getattr(model, "net", model)
    if not hasattr(net, "capture_masks"):
        raise TypeError(f"{type(net).__name__} is not a Residual Attention Network (it has no capture_masks())")
    return net


@torch.no_grad()
def mask_heatmaps(model: nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{module name: (N, H, W)}``: each attention module's mask M averaged over channels and bilinearly upsampled
    to the images' size, from one forward pass of ``model`` (in its current train/eval mode)."""
    net = attention_network(model)
    with net.capture_masks() as masks:
        model(images)
    heatmaps = {}
    for name, mask in masks.items():
        mean = mask.float().mean(dim=1, keepdim=True)
        heatmaps[name] = F.interpolate(mean, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0].cpu()
    return heatmaps


def module_label(name: str) -> str:
    """``stages.1.attention.0`` -> ``stage 2, module 1`` (1-based, as in the paper's figures)."""
    found = re.fullmatch(r"stages\.(\d+)\.attention\.(\d+)", name)
    return f"stage {int(found[1]) + 1}, module {int(found[2]) + 1}" if found else name


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


# ---- data for the command line (shared with lightning_modules.probe) -------------------------------------------
def _run_config_data(ckpt: Path) -> tuple[Any, str] | None:
    """The ``data`` section of the run that wrote ``ckpt`` (``<run>/checkpoints/x.ckpt``) and the run's cwd."""
    from omegaconf import OmegaConf

    run = ckpt.resolve().parent.parent
    config = run / ".hydra" / "config.yaml"
    if ckpt.resolve().parent.name != "checkpoints" or not config.is_file():
        return None
    hydra_file = run / ".hydra" / "hydra.yaml"
    cwd = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.cwd") if hydra_file.is_file() else None
    return OmegaConf.load(config).data, str(cwd or Path.cwd())


def load_datamodule(ckpt: Path | None, data: str | None, overrides: Sequence[str] = ()) -> ImageDataModule:
    """A set-up datamodule: ``conf/data/<data>.yaml``, or the data config of the run that wrote ``ckpt``, with
    ``key=value`` overrides. ``paths.data_dir`` is ``$RESATTN_DATA_DIR`` or ``<cwd>/data`` as in conf/paths."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    root = str(Path.cwd())
    if data is not None:
        path = CONF_DATA / f"{data}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in CONF_DATA.glob("*.yaml")))
            raise ValueError(f"unknown data config {data!r}; known: {known}")
        section = OmegaConf.load(path)
    else:
        found = _run_config_data(ckpt) if ckpt is not None else None
        if found is None:
            raise ValueError(
                f"no run config next to {ckpt} (expected <run>/checkpoints/*.ckpt with <run>/.hydra/config.yaml): "
                "name the data the checkpoint was trained on with --data (e.g. --data cifar10)"
            )
        section, root = found
    data_dir = os.environ.get("RESATTN_DATA_DIR", str(Path(root) / "data"))
    cfg = OmegaConf.create({"paths": {"root_dir": root, "data_dir": data_dir}, "data": section})
    cfg.data = OmegaConf.merge(cfg.data, OmegaConf.from_dotlist(list(overrides)))
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    return datamodule


def split_images(datamodule: ImageDataModule, split: str, num_images: int) -> tuple[torch.Tensor, list[str]]:
    """The first ``num_images`` preprocessed images of the ``val`` or ``test`` split and their class names."""
    if split not in ("val", "test"):
        raise ValueError(f"unknown split {split!r}; accepted: val, test")
    dataset = datamodule.val_set if split == "val" else datamodule.test_set
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"the {split} split is empty; use --split test or a data config with a validation split")
    items = [dataset[i] for i in range(min(num_images, len(dataset)))]
    names = datamodule.class_names or []
    labels = [names[label] if label < len(names) else str(label) for _, label in items]
    return torch.stack([image for image, _ in items]), labels


def file_images(datamodule: ImageDataModule, paths: Sequence[str], num_images: int) -> tuple[torch.Tensor, list[str]]:
    """Image files (or every image under folders) preprocessed like the test split: resize, centre crop, then the
    datamodule's ``eval_transform``. At most ``num_images``, in sorted order."""
    from lightning_modules.reports import IMAGE_SUFFIXES, _load_image

    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"image path {path} does not exist")
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {', '.join(paths)}")
    transform = datamodule.eval_transform()
    files = files[:num_images]
    images = [transform(TF.pil_to_tensor(_load_image(p, datamodule.in_chans, datamodule.image_size))) for p in files]
    return torch.stack(images), [p.name for p in files]


def default_output(ckpt: Path, name: str) -> Path:
    """``<run>/<name>`` for a checkpoint in ``<run>/checkpoints/``, else ``<name>`` beside the checkpoint."""
    folder = ckpt.resolve().parent
    return (folder.parent if folder.name == "checkpoints" else folder) / name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_modules.visualize",
        description="Draw the attention masks of a checkpoint over images (PAPER.md §1.4).",
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
    from lightning_modules.checkpoints import CheckpointError, load_classifier

    args = _parser().parse_args(argv)
    ckpt = Path(args.ckpt)
    try:
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
        if args.num_images < 1:
            raise ValueError(f"--num-images must be >= 1, got {args.num_images}")
        datamodule = load_datamodule(ckpt, args.data, args.set)
        model = load_classifier(ckpt, num_classes=datamodule.num_classes).eval()
        if args.images:
            images, labels = file_images(datamodule, args.images, args.num_images)
        else:
            images, labels = split_images(datamodule, args.split, args.num_images)
        heatmaps = mask_heatmaps(model, images)
        if not heatmaps:
            raise ValueError(f"{model.hparams.arch} has no attention modules: nothing to draw")
    except (ValueError, TypeError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else default_output(ckpt, "masks")
    title = f"{model.hparams.arch}: attention masks M (mean over channels) of {ckpt.name}"
    path = save_figure(mask_figure(images, heatmaps, labels, title), out / "attention_masks.png")
    print(f"wrote {path} ({len(labels)} images x {len(heatmaps)} attention modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
