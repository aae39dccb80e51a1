"""Files written by eval.py: per-class accuracy CSV, confusion-matrix PNG, predictions on user images."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from datamodules.base import ImageDataModule
from datamodules.user_images import find_images, preprocess
from lightning_modules.classifier import ImageClassifier
from lightning_modules.figures import save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


def write_per_class_csv(path: Path, class_names: Sequence[str], accuracies: Sequence[float]) -> Path:
    """One row per class: index, name, accuracy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class_index", "class_name", "accuracy"])
        writer.writerows(
            (i, name, f"{acc:.6f}") for i, (name, acc) in enumerate(zip(class_names, accuracies, strict=True))
        )
    return path


def confusion_figure(confusion: torch.Tensor, class_names: Sequence[str]) -> Figure:
    """Row-normalised confusion matrix (true class per row) as a heat map, each cell with its image count (up to 30
    classes; more would not be legible)."""
    from matplotlib.figure import Figure

    counts = confusion.long()
    rates = counts.float() / counts.sum(dim=1, keepdim=True).clamp_min(1)
    n = len(class_names)
    size = min(4 + 0.4 * n, 20)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    im = ax.imshow(rates.numpy(), cmap="viridis", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), class_names, rotation=90)
        ax.set_yticks(range(n), class_names)
        for (true, predicted), count in np.ndenumerate(counts.numpy()):
            dark = rates[true, predicted] < 0.5  # viridis is dark below its middle
            color = "white" if dark else "black"
            ax.text(predicted, true, str(count), ha="center", va="center", fontsize=max(6, 11 - n // 4), color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix ({int(counts.sum())} images)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def write_confusion_png(path: Path, confusion: torch.Tensor, class_names: Sequence[str]) -> Path:
    """:func:`confusion_figure` as a PNG."""
    return save_figure(confusion_figure(confusion, class_names), path)


@dataclass
class Predictions:
    """Where :func:`predict_folder` wrote its CSV, and the files it could not read (``file: reason``)."""

    path: Path
    unreadable: list[str] = field(default_factory=list)


def images_to_predict(folder: Path) -> list[Path]:
    """The image files under ``predict_dir``; a clear error if it is not a directory or holds no image."""
    if not folder.is_dir():
        raise FileNotFoundError(f"predict_dir={folder} is not a directory of images")
    return find_images([folder])


@torch.no_grad()
def predict_folder(
    model: ImageClassifier, datamodule: ImageDataModule, folder: Path, output: Path, top_k: int = 5
) -> Predictions:
    """Classify every image under ``folder`` with the data's eval preprocessing; write a CSV of top-k classes.

    Images are preprocessed like the test split (:mod:`datamodules.user_images`). A file that cannot be decoded
    gets a row with its ``error`` and no classes, is logged, and does not stop the others.
    """
    files = images_to_predict(folder)
    names = datamodule.class_names or [str(i) for i in range(model.hparams.num_classes)]
    k = min(top_k, model.hparams.num_classes)
    model.eval()
    output.parent.mkdir(parents=True, exist_ok=True)
    result = Predictions(output)
    with output.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", *[f"top{i + 1}" for i in range(k)], *[f"prob{i + 1}" for i in range(k)], "error"])
        for path in files:
            name = str(path.relative_to(folder))
            try:
                x = preprocess(path, datamodule).unsqueeze(0)
            except OSError as err:
                result.unreadable.append(f"{name}: {err.__cause__ or err}")
                writer.writerow([name, *[""] * (2 * k), f"unreadable image: {err.__cause__ or err}"])
                continue
            probs = model(x.to(model.device)).softmax(dim=1)[0]
            values, indices = probs.topk(k)
            writer.writerow([name, *[names[i] for i in indices.tolist()], *[f"{v:.4f}" for v in values], ""])
    if result.unreadable:
        log.warning(
            "predict_dir: %d of %d image(s) could not be read and have no prediction (their rows in %s say why):\n  %s",
            len(result.unreadable),
            len(files),
            output,
            "\n  ".join(result.unreadable),
        )
    return result
