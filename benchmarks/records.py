"""The CSV records as the document reads them: the sections in the document's order (:data:`TITLES`), one CSV per
section (:func:`read`), and the values of a row formatted for the tables (medians and ranges of its rounds, other
processes' CPU share, the configuration, where it was measured)."""

from __future__ import annotations

import csv
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

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


def rates(row: Row) -> list[float]:
    return [float(v) for v in row.get("img_s", "").split(";") if v]


def median(row: Row | None) -> float | None:
    return statistics.median(rates(row)) if row and rates(row) else None


def number(text: str | None) -> float | None:
    return float(text) if text else None


def seconds(row: Row) -> list[float]:
    """A ``train.py`` row's seconds per round, start to exit (its img/s: training images per second of it all)."""
    return [int(row["steps"]) * int(row["batch"]) / rate for rate in rates(row)]


def fmt_rate(row: Row | None) -> str:
    """``median (min–max)`` of a row's rounds, or ``–``."""
    return spread(rates(row) if row else [])


def spread(values: Sequence[float]) -> str:
    if not values:
        return "–"
    digits = 1 if statistics.median(values) < 100 else 0
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def fmt_ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or not b else f"{a / b:.2f}x"


def fmt_pct(value: float | str | list[float] | None) -> str:
    """A share in per cent; of several (a list, or ``a;b`` as a CSV holds them), their range."""
    values = [float(v) for v in value.split(";") if v] if isinstance(value, str) else value
    if not isinstance(values, list):
        return "–" if values is None else f"{100 * values:.0f} %"
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
    shares = [float(v) for r in rows if r and r["others_cpu"] for v in r["others_cpu"].split(";")]
    return fmt_pct(max(shares, default=None))


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
