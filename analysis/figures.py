"""The figures of a results document: learning curves of a table's runs (from their CSV logs) and the attention-mask
grids of its attention rows' best networks (from their recorded best checkpoints), with the object boxes of data that
has them."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from analysis.run_data import load_datamodule, recorded_best_checkpoints, split_images
from analysis.runs import Run, csv_folders
from analysis.table_specs import Row, Table
from analysis.tables import matching_runs
from datamodules.base import ImageDataModule
from lightning_modules import ImageClassifier
from lightning_modules.checkpoint_loading import load_classifier
from lightning_modules.figures import pyplot, save_figure
from lightning_modules.mask_plots import has_attention_modules, mask_figure, mask_heatmaps

CURVES = (("loss", "train/loss", "val/loss"), ("top-1", "train/acc1", "val/acc1"))


def read_curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value)]}`` of the epoch-level train/val loss and top-1 in every CSV log of ``run`` (one per
    restart, in order)."""
    names = {name for _, *pair in CURVES for name in pair}
    curves: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    for folder in csv_folders(run):
        path = folder / "metrics.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                for name in names:
                    if row.get(name) not in (None, "") and row.get("step") not in (None, ""):
                        curves[name].append((int(float(row["step"])), float(row[name])))
    return curves


def plot_curves(table: Table, runs: Sequence[Run], path: Path) -> Path | None:
    """One PNG: loss and top-1 against optimiser steps, a colour per row, train dashed, validation solid, one line
    per run (seed). None when no run has a curve."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(6 * len(CURVES), 4.2))
    drawn = False
    for index, row in enumerate(table.rows):
        colour = f"C{index}"
        for n, run in enumerate(matching_runs(table, row, runs)):
            curves = read_curves(run.path)
            for ax, (title, train_key, val_key) in zip(axes, CURVES, strict=True):
                for key, style in ((train_key, "--"), (val_key, "-")):
                    if curves[key]:
                        steps, values = zip(*curves[key], strict=True)
                        label = f"{row.label} ({key.split('/')[0]})" if n == 0 else None
                        ax.plot(steps, values, style, color=colour, label=label, linewidth=1.2)
                        drawn = True
                ax.set_title(title)
    if not drawn:
        plt.close(fig)
        return None
    for ax, (title, *_) in zip(axes, CURVES, strict=True):
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[-1].legend(fontsize=8)
    fig.suptitle(f"{table.title}: learning curves (dashed: train, solid: validation)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


SELECTION_METRICS = ("val/acc1_best", "test/acc1")


def selection_metric(runs: Sequence[Run]) -> str:
    """What picks a row's best run: its best validation top-1, as training picks its checkpoint; test top-1 only
    when some run has no validation split (data without one, or a log that never recorded it)."""
    return next(name for name in SELECTION_METRICS if all(name in run.metrics for run in runs))


def row_checkpoint(table: Table, row: Row, runs: Sequence[Run]) -> Path | None:
    """The recorded best checkpoint of the row's best finished run (:func:`selection_metric`; the first by path on a
    tie); runs whose training has not finished, or whose checkpoint is gone, are passed over."""
    found = recorded_best_checkpoints(matching_runs(table, row, runs))
    if not found:
        return None
    metric = selection_metric([run for run, _ in found])
    return max(found, key=lambda pair: pair[0].metrics[metric])[1]


@dataclass(frozen=True)
class TrainedNetwork:
    """A row's best network (:func:`row_checkpoint`), loaded in eval mode, with its run's own data."""

    label: str
    checkpoint: Path
    model: ImageClassifier
    datamodule: ImageDataModule


def attention_networks(table: Table, runs: Sequence[Run]) -> list[TrainedNetwork]:
    """The best network of every row that has a finished run and attention modules, in the table's row order (the
    first row is the table's main network)."""
    networks = []
    for row in table.rows:
        checkpoint = row_checkpoint(table, row, runs)
        if checkpoint is None:
            continue
        datamodule = load_datamodule(checkpoint, None)
        model = load_classifier(checkpoint, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans).eval()
        if has_attention_modules(model):
            networks.append(TrainedNetwork(row.label, checkpoint, model, datamodule))
    return networks


def plot_masks(trained: TrainedNetwork, path: Path, num_images: int = 8) -> Path | None:
    """The attention-mask grid of ``trained`` over the first test images of its own data, one colour scale for every
    panel, each image's object box drawn when the data has boxes (None without masks)."""
    images, labels = split_images(trained.datamodule, "test", num_images)
    heatmaps = mask_heatmaps(trained.model, images)
    if not heatmaps:
        return None
    boxes = trained.datamodule.boxes("test")[: len(images)] if hasattr(trained.datamodule, "boxes") else None
    title = (  # two short lines: the grid of a small network is narrow
        f"{trained.label}, {trained.checkpoint.name}\nmasks M (mean over channels) on test images"
        f"{', object boxes in white' if boxes is not None else ''}"
    )
    return save_figure(mask_figure(images, heatmaps, labels, title, boxes=boxes), path)
