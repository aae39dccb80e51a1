"""The benchmark's plots, drawn from the CSV records: throughput of every configuration of both libraries, and
Attention-56's scaling with batch size and input size."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from benchmarks.records import TWINS, Row, by_loop, config, median, number, rates, train_eval


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_throughput(rows: list[Row], path: Path) -> None:
    """Train and eval img/s (median, min–max whiskers): one panel per network, input size and batch, one pair of bars
    per library and configuration (pytorchcv in the panel of the network it implements)."""
    panels: dict[tuple[str, int, int], list[dict[str, Row]]] = {}
    for pair in by_loop(rows, "library", "arch", "size", "batch", "precision", "channels_last", "compile").values():
        r = next(iter(pair.values()))
        if any(rates(row) for row in pair.values()):
            panels.setdefault((TWINS.get(r["arch"], r["arch"]), int(r["size"]), int(r["batch"])), []).append(pair)
    if not panels:
        return
    plt = _pyplot()
    keys = sorted(panels, key=lambda k: (-k[1], k[0], k[2]))
    cols, rows_ = min(2, len(keys)), math.ceil(len(keys) / 2)
    height = (0.9 + 0.42 * max(len(panels[k]) for k in keys)) * rows_
    fig, axes = plt.subplots(rows_, cols, figsize=(7 * cols, height), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    colors = {("resattn", "bare"): "#1f77b4", ("resattn", "eval"): "#9ecae1"}
    colors |= {("pytorchcv", "bare"): "#d62728", ("pytorchcv", "eval"): "#fcae91"}
    for ax, key in zip(axes.flat, keys, strict=False):
        entries = sorted(
            panels[key], key=lambda p: (config(next(iter(p.values())), True), next(iter(p.values()))["library"])
        )
        for y, pair in enumerate(entries):
            for offset, (loop, r) in zip((-0.2, 0.2), sorted(pair.items()), strict=False):
                if values := rates(r):
                    mid, label = statistics.median(values), f"{r['library']} {'train' if loop == 'bare' else 'eval'}"
                    whisker = [[mid - min(values)], [max(values) - mid]]
                    ax.barh(
                        y + offset, mid, 0.38, color=colors[r["library"], loop], xerr=whisker, capsize=2, label=label
                    )
        ticks = [f"{r['library']}\n{config(r, True)}" for r in (next(iter(p.values())) for p in entries)]
        ax.set_yticks(range(len(entries)), ticks, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{key[0]} at {key[1]}x{key[1]}, batch {key[2]}", fontsize=9)
        ax.set_xlabel("images / s (median, min–max)", fontsize=8)
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_scaling(rows: list[Row], path: Path) -> None:
    """img/s (train, eval) and training peak memory against batch size at 224 and against input size."""
    pairs = [p for p in train_eval(rows) if "bare" in p and "eval" in p and rates(p["bare"]) and rates(p["eval"])]
    by_batch = sorted((p for p in pairs if p["bare"]["size"] == "224"), key=lambda p: int(p["bare"]["batch"]))
    others_ = [p["bare"]["batch"] for p in pairs if p["bare"]["size"] != "224"]
    batch = max(set(others_), key=others_.count) if others_ else None
    by_size = sorted((p for p in pairs if p["bare"]["batch"] == batch), key=lambda p: int(p["bare"]["size"]))
    if not by_batch and not by_size:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, series, xlabel, field in (
        (axes[0], by_batch, "batch size (input 224x224)", "batch"),
        (axes[1], by_size, f"input size (batch {batch})", "size"),
    ):
        xs = [int(p["bare"][field]) for p in series]
        ax.plot(xs, [median(p["bare"]) for p in series], "o-", label="train img/s")
        ax.plot(xs, [median(p["eval"]) for p in series], "s--", label="eval img/s")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log" if field == "size" else "linear")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("images / s")
        twin = ax.twinx()
        twin.plot(xs, [number(p["bare"]["peak_mib"]) for p in series], "^:", color="gray", label="train peak MiB")
        twin.set_ylabel("training peak memory (MiB)")
        lines, extra = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="upper right")
        ax.set_title(f"{series[0]['bare']['arch']} ({config(series[0]['bare'], True)})" if series else "", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
