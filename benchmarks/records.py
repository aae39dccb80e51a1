"""The CSV records as the document reads them: the sections in the document's order (:data:`TITLES`), one CSV per
section (:func:`read`), and the values of a row formatted for the tables (medians and ranges of its rounds, other
processes' CPU share, the configuration, where it was measured), and the plots drawn from them."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

from lightning_modules.figures import pyplot, save_figure

Row = dict[str, str]
TITLES = {
    "compare": "resattn vs pytorchcv (ImageNet Attention-56/92, 224x224)",
    "models": "Variants: params, GMACs, throughput, peak memory",
    "options": "Fast options on vs off (the Lightning training path)",
    "loops": "Lightning training loop vs a bare PyTorch loop",
    "scaling": "Scaling of Attention-56 with batch size and input size",
    "data": "Data pipelines alone: torchvision DataLoader vs GPU-resident batched augmentation",
    "formats": "Data formats: ImageFolder + PIL, Hugging Face datasets, litdata shards (and GPU decoding) per CPU core",
    "recipe": "The paper's CIFAR Attention-92 recipe and ImageNet Attention-56 at resattn's default",
    "sharing": "A short training alone and beside a busy process: torch's CPU threads before and after",
}
TWINS = {"resattnet56": "resattn56", "resattnet92": "resattn92"}  # pytorchcv's network: the resattn one it implements


def read(folder: Path) -> dict[str, list[Row]]:
    """The rows of every section's CSV in ``folder``, in the document's order."""
    sections = {}
    for name in TITLES:
        path = folder / f"{name}.csv"
        if path.is_file():
            with path.open(newline="") as f:
                sections[name] = list(csv.DictReader(f))
    if not sections:
        raise FileNotFoundError(
            f"{folder} holds none of {', '.join(f'{n}.csv' for n in TITLES)}: run python -m benchmarks.run"
        )
    return sections


def numbers(row: Row | None, key: str) -> list[float]:
    """The numbers in a row's cell: one per round where it holds several (``a;b``)."""
    return [float(v) for v in row.get(key, "").split(";") if v] if row else []


def rates(row: Row | None) -> list[float]:
    return numbers(row, "img_s")


def median(row: Row | None) -> float | None:
    return statistics.median(rates(row)) if rates(row) else None


def number(text: str | None) -> float | None:
    return float(text) if text else None


def seconds(row: Row | None) -> list[float]:
    """A ``train.py`` row's seconds per round, start to exit (its img/s: training images per second of it all)."""
    return [int(row["steps"]) * int(row["batch"]) / rate for rate in rates(row)]


def fmt_rate(row: Row | None) -> str:
    """``median (min–max)`` of a row's rounds, or ``–``."""
    return spread(rates(row))


def spread(values: Sequence[float]) -> str:
    if not values:
        return "–"
    digits = 1 if statistics.median(values) < 100 else 0
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or not b else f"{a / b:.2f}x"


def fmt_pct(value: float | Sequence[float] | None) -> str:
    """A share in per cent; of several, their range."""
    values = [] if value is None else [value] if isinstance(value, (int, float)) else list(value)
    low, high = (f"{100 * v:.0f}" for v in (min(values, default=0), max(values, default=0)))
    return "–" if not values else f"{low} %" if low == high else f"{low}–{high} %"


def fmt_mem(row: Row | None) -> str:
    return f"{float(row['peak_mib']):.0f}" if row and row["peak_mib"] else "–"


def fmt_hours(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def others(rows: Iterable[Row | None]) -> str:
    """The largest share of the CPU other processes used while ``rows`` were measured."""
    return fmt_pct(max((share for r in rows for share in numbers(r, "others_cpu")), default=None))


def config(row: Row, mode: bool = False) -> str:
    text = f"{row['precision']}/{'channels_last' if row['channels_last'] == 'True' else 'nchw'}"
    return text + ("/compile" if row["compile"] == "True" else "/eager") * mode


def ms_per_step(row: Row) -> float | None:
    rate = median(row)
    return 1e3 * int(row["batch"]) / rate if rate else None


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def timing(row: Row) -> str:
    return (
        f"median (min–max) of {row['repeats']} rounds of {row['steps']} step(s) after {row['warmup']} warm-up step(s)"
    )


def memory(row: Row) -> str:
    return "the peak RSS of the process" if row["device"] == "cpu" else "CUDA max allocated"


def provenance(rows: Sequence[Row]) -> str:
    """Which command measured the rows, when, where."""
    runs = dict.fromkeys((r["command"], r["date"], r["cpu"], r["cores"], r["gpu"], r["versions"]) for r in rows)
    return " ".join(
        f"Measured by `{command}` on {date}: {cpu}, {cores} logical cores, GPU {gpu}; {versions}."
        for command, date, cpu, cores, gpu, versions in runs
    )


def by_loop(rows: Iterable[Row], *keys: str) -> dict[tuple[str, ...], dict[str, Row]]:
    """Rows by the values of ``keys``, then by loop (a configuration's train and eval rows together)."""
    index: dict[tuple[str, ...], dict[str, Row]] = {}
    for row in rows:
        index.setdefault(tuple(row[k] for k in keys), {})[row["loop"]] = row
    return index


def train_eval(rows: list[Row]) -> list[dict[str, Row]]:
    return list(by_loop(rows, "arch", "size", "batch", "precision", "channels_last", "compile").values())


def network_cells(pair: dict[str, Row]) -> dict[str, object]:
    """Every cell a network table may show for one configuration, from its train (``bare``) and ``eval`` rows."""
    train, evaluation = pair.get("bare"), pair.get("eval")
    r = train or evaluation or {}
    return {
        "variant": f"`{r['arch']}`",
        "input": r["size"],
        "batch": r["batch"],
        "precision/format/mode": config(r, mode=True),
        "params (M)": f"{float(r['params_m']):.2f}" if r["params_m"] else "–",
        "GMACs/img": f"{float(r['gmacs']):.3f}" if r["gmacs"] else "–",
        "train img/s": fmt_rate(train),
        "eval img/s": fmt_rate(evaluation),
        "train peak MiB": fmt_mem(train),
        "eval peak MiB": fmt_mem(evaluation),
        "train warm-up s": f"{float(train['warmup_s']):.1f}" if train and train["warmup_s"] else "–",
        "threads": r["threads"],
        "others' CPU": others(pair.values()),
        "error": r["error"][:80],
    }


def network_table(rows: list[Row], omit: Sequence[str] = ()) -> str:
    """The columns of :func:`network_cells` but ``omit``, a row per configuration."""
    cells = [{key: cell for key, cell in network_cells(pair).items() if key not in omit} for pair in train_eval(rows)]
    return table(list(cells[0]), [list(row.values()) for row in cells])


def plot_throughput(rows: list[Row], path: Path) -> None:
    """Train and eval img/s (median, min–max whiskers): one panel per network, input size and batch, one pair of bars
    per library and configuration (pytorchcv in the panel of the network it implements)."""
    panels: dict[tuple[str, int, int], list[tuple[Row, dict[str, Row]]]] = {}
    for pair in by_loop(rows, "library", "arch", "size", "batch", "precision", "channels_last", "compile").values():
        r = next(iter(pair.values()))
        if any(rates(row) for row in pair.values()):
            panels.setdefault((TWINS.get(r["arch"], r["arch"]), int(r["size"]), int(r["batch"])), []).append((r, pair))
    if not panels:
        return
    plt = pyplot()
    keys = sorted(panels, key=lambda k: (-k[1], k[0], k[2]))
    cols, rows_ = min(2, len(keys)), math.ceil(len(keys) / 2)
    height = (0.9 + 0.42 * max(len(panels[k]) for k in keys)) * rows_
    fig, axes = plt.subplots(rows_, cols, figsize=(7 * cols, height), squeeze=False)
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    colors = {("resattn", "bare"): "#1f77b4", ("resattn", "eval"): "#9ecae1"}
    colors |= {("pytorchcv", "bare"): "#d62728", ("pytorchcv", "eval"): "#fcae91"}
    for ax, key in zip(axes.flat, keys, strict=False):
        entries = sorted(panels[key], key=lambda entry: (config(entry[0], True), entry[0]["library"]))
        for y, (_, pair) in enumerate(entries):
            for offset, (loop, r) in zip((-0.2, 0.2), sorted(pair.items()), strict=False):
                if values := rates(r):
                    mid, label = statistics.median(values), f"{r['library']} {'train' if loop == 'bare' else 'eval'}"
                    whisker = [[mid - min(values)], [max(values) - mid]]
                    ax.barh(
                        y + offset, mid, 0.38, color=colors[r["library"], loop], xerr=whisker, capsize=2, label=label
                    )
        ticks = [f"{r['library']}\n{config(r, True)}" for r, _ in entries]
        ax.set_yticks(range(len(entries)), ticks, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{key[0]} at {key[1]}x{key[1]}, batch {key[2]}", fontsize=9)
        ax.set_xlabel("images / s (median, min–max)", fontsize=8)
        handles, names = ax.get_legend_handles_labels()
        unique = dict(zip(names, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def plot_scaling(rows: list[Row], path: Path) -> None:
    """img/s (train, eval) and training peak memory against batch size at 224 and against input size."""
    pairs = [p for p in train_eval(rows) if "bare" in p and "eval" in p and rates(p["bare"]) and rates(p["eval"])]
    by_batch = sorted((p for p in pairs if p["bare"]["size"] == "224"), key=lambda p: int(p["bare"]["batch"]))
    others_ = [p["bare"]["batch"] for p in pairs if p["bare"]["size"] != "224"]
    batch = max(set(others_), key=others_.count) if others_ else None
    by_size = sorted((p for p in pairs if p["bare"]["batch"] == batch), key=lambda p: int(p["bare"]["size"]))
    if not by_batch and not by_size:
        return
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, series, xlabel, field in (
        (axes[0], by_batch, "batch size (input 224x224)", "batch"),
        (axes[1], by_size, f"input size (batch {batch})", "size"),
    ):
        xs = [int(p["bare"][field]) for p in series]
        ax.plot(xs, [median(p["bare"]) for p in series], "o-", label="train img/s")
        ax.plot(xs, [median(p["eval"]) for p in series], "s--", label="eval img/s")
        ax.set_xscale("log", base=2)
        ax.set(yscale="log" if field == "size" else "linear", xlabel=xlabel, ylabel="images / s")
        ax.set_xticks(xs, [str(x) for x in xs])
        twin = ax.twinx()
        twin.plot(xs, [number(p["bare"]["peak_mib"]) for p in series], "^:", color="gray", label="train peak MiB")
        twin.set_ylabel("training peak memory (MiB)")
        lines, extra = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
        ax.legend(lines[0] + extra[0], lines[1] + extra[1], fontsize=8, loc="upper right")
        ax.set_title(f"{series[0]['bare']['arch']} ({config(series[0]['bare'], True)})" if series else "", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
