"""Matplotlib figures of the results: img/s per variant and configuration, and Attention-56's scaling."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from benchmarks.measure import Result

COLORS = {("resattn", "train"): "#1f77b4", ("resattn", "eval"): "#9ecae1"}
COLORS |= {("pytorchcv", "train"): "#d62728", ("pytorchcv", "eval"): "#fcae91"}
PYTORCHCV_TWIN = {"resattnet56": "resattn56", "resattnet92": "resattn92"}


def _pyplot() -> ModuleType:
    """``matplotlib.pyplot`` with the file-only Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_throughput(results: Sequence[Result], path: Path) -> Path | None:
    """Train and eval img/s (median, min–max whiskers) of every case: one panel per network, input size and
    batch, one pair of bars per configuration; pytorchcv shares the panel of the architecture it implements.
    Returns ``None`` (and writes nothing) when no case has a timed phase."""
    panels: dict[tuple[str, int, int], list[Result]] = defaultdict(list)
    for result in results:
        if result.phases:
            case = result.case
            panels[PYTORCHCV_TWIN.get(case.model, case.model), case.size, case.batch].append(result)
    if not panels:
        return None
    plt = _pyplot()
    keys = sorted(panels, key=lambda k: (-k[1], k[0], k[2]))
    cols = min(2, len(keys))
    rows = math.ceil(len(keys) / cols)
    tallest = max(len(panels[k]) for k in keys)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, (0.9 + 0.42 * tallest) * rows), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys, strict=False):
        entries = sorted(panels[key], key=lambda r: (r.case.config, r.case.library))
        ticks = []
        for y, result in enumerate(entries):
            for offset, phase in ((-0.2, "train"), (0.2, "eval")):
                measured = result.phases.get(phase)
                if measured is None or not measured.img_per_s:
                    continue
                low, high = min(measured.img_per_s), max(measured.img_per_s)
                ax.barh(
                    y + offset,
                    measured.median,
                    height=0.38,
                    color=COLORS[result.case.library, phase],
                    xerr=[[measured.median - low], [high - measured.median]],
                    capsize=2,
                    label=f"{result.case.library} {phase}",
                )
            ticks.append(f"{result.case.library}\n{result.case.config}")
        ax.set_yticks(range(len(entries)), ticks, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{key[0]} at {key[1]}x{key[1]}, batch {key[2]}", fontsize=9)
        ax.set_xlabel("images / s (median, min–max)", fontsize=8)
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_scaling(results: Sequence[Result], path: Path, size: int = 224) -> Path | None:
    """img/s (train, eval) and training peak memory of one network against batch size (at ``size``) and against
    input size (at the most common batch of the other cases). ``None`` when nothing was measured."""
    measured = [r for r in results if r.phases]
    by_batch = sorted((r for r in measured if r.case.size == size), key=lambda r: r.case.batch)
    others = [r.case.batch for r in measured if r.case.size != size]
    batch = max(set(others), key=others.count) if others else None
    by_size = sorted((r for r in measured if r.case.batch == batch), key=lambda r: r.case.size)
    if not by_batch and not by_size:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, series, xlabel, attr in (
        (axes[0], by_batch, f"batch size (input {size}x{size})", "batch"),
        (axes[1], by_size, f"input size (batch {batch})", "size"),
    ):
        xs = [getattr(r.case, attr) for r in series]
        for phase, style in (("train", "o-"), ("eval", "s--")):
            ax.plot(xs, [r.phases[phase].median for r in series], style, label=f"{phase} img/s")
        ax.set_xscale("log", base=2)
        if attr == "size":  # img/s falls with the square of the size
            ax.set_yscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("images / s")
        memory = ax.twinx()
        peaks = [r.phases["train"].peak_mem_mib for r in series]
        memory.plot(xs, peaks, "^:", color="gray", label="train peak MiB")
        memory.set_ylabel("training peak memory (MiB)")
        lines = ax.get_legend_handles_labels()
        extra = memory.get_legend_handles_labels()
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="upper right")
        title = series[0].case if series else None
        ax.set_title(f"{title.model} ({title.config})" if title else "", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
