"""The figures of a results document: learning curves of a table's runs (from their CSV logs) and the attention-mask
grid of its best attention network (from its best checkpoint)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from analysis.run_data import load_datamodule, split_images
from analysis.runs import Run, csv_folders
from analysis.table_specs import Table
from analysis.tables import matching_runs
from lightning_modules.checkpoint_loading import load_classifier
from lightning_modules.mask_plots import mask_figure, mask_heatmaps, save_figure

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def best_attention_checkpoint(table: Table, runs: Sequence[Run]) -> Path | None:
    """The best checkpoint of the finished run with the highest test top-1 in the first row that has one (the first
    row is the table's main network)."""
    for row in table.rows:
        finished = [run for run in matching_runs(table, row, runs) if "test/acc1" in run.metrics]
        for run in sorted(finished, key=lambda r: r.metrics["test/acc1"], reverse=True):
            found = sorted((run.path / "checkpoints").glob("best-*.ckpt"))
            if found:
                return found[-1]
    return None


def plot_masks(table: Table, runs: Sequence[Run], path: Path, num_images: int = 8) -> Path | None:
    """The attention-mask grid of :func:`best_attention_checkpoint` over the first test images of its own data; None
    when no checkpoint is found or its network has no attention modules."""
    checkpoint = best_attention_checkpoint(table, runs)
    if checkpoint is None:
        return None
    datamodule = load_datamodule(checkpoint, None)
    model = load_classifier(checkpoint, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans).eval()
    if not hasattr(model.net, "capture_masks"):
        return None
    images, labels = split_images(datamodule, "test", num_images)
    heatmaps = mask_heatmaps(model, images)
    if not heatmaps:
        return None
    title = f"{model.hparams.arch}: attention masks M (mean over channels), test images, {checkpoint.name}"
    return save_figure(mask_figure(images, heatmaps, labels, title), path)
