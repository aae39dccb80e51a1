"""Tables (Markdown and CSV) and the machine description for the benchmark results."""

from __future__ import annotations

import csv
import datetime
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.loops import LoopResult
from benchmarks.measure import PHASES, Result


def machine(threads: str) -> dict[str, str]:
    """CPU/GPU model, core count, threads and library versions: where the numbers were measured."""
    import lightning
    import timm

    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        import pytorchcv

        pytorchcv_version = getattr(pytorchcv, "__version__", "installed")
    except ImportError:
        pytorchcv_version = "not installed"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "torch threads": threads,
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "gpu": gpu,
        "memory": _memory(),
        "python": platform.python_version(),
        "versions": (
            f"torch {torch.__version__}, timm {timm.__version__}, lightning {lightning.__version__}, "
            f"pytorchcv {pytorchcv_version}"
        ),
    }


def _memory() -> str:
    try:
        total = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        return "unknown"
    return f"{int(total.split()[1]) / 2**20:.1f} GiB"


def fmt_rate(values: Sequence[float]) -> str:
    """``median (min-max)`` of repeat throughputs, or ``–``."""
    if not values:
        return "–"
    median = statistics.median(values)
    digits = 1 if median < 100 else 0
    return f"{median:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def fmt_pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def result_row(result: Result) -> dict[str, object]:
    """One flat CSV row of a model measurement (all repeats kept, ``;``-separated)."""
    case = result.case
    row: dict[str, object] = {
        "library": case.library,
        "model": case.model,
        "size": case.size,
        "batch": case.batch,
        "precision": case.precision,
        "memory_format": case.memory_format,
        "mode": case.mode,
        "device": case.device,
        "threads": result.threads,
        "params_m": round(result.params_m, 3),
        "gmacs": None if result.gmacs is None else round(result.gmacs, 3),
    }
    for phase in PHASES:
        measured = result.phases.get(phase)
        row[f"{phase}_img_s_median"] = round(measured.median, 3) if measured else None
        row[f"{phase}_img_s_repeats"] = ";".join(f"{v:.3f}" for v in measured.img_per_s) if measured else None
        row[f"{phase}_spread_pct"] = round(measured.spread_pct, 1) if measured else None
        row[f"{phase}_peak_mem_mib"] = round(measured.peak_mem_mib, 1) if measured else None
        row[f"{phase}_warmup_s"] = round(measured.warmup_s, 2) if measured else None
        contention = measured.contention if measured else None
        row[f"{phase}_contention"] = None if contention is None else round(contention, 3)
    row["load_before"] = round(result.load_before, 2)
    row["load_after"] = round(result.load_after, 2)
    row["error"] = result.error or ""
    return row


def loop_row(result: LoopResult) -> dict[str, object]:
    case = result.case
    return {
        "loop": case.loop,
        "arch": case.arch,
        "batch": case.batch,
        "data": case.data,
        "precision": case.precision,
        "channels_last": case.channels_last,
        "compile": case.compile,
        "threads": result.threads,
        "img_s_median": round(result.median, 3) if result.img_per_s else None,
        "img_s_repeats": ";".join(f"{v:.3f}" for v in result.img_per_s),
        "spread_pct": round(result.spread_pct, 1) if result.img_per_s else None,
        "step_ms": round(result.step_ms, 2),
        "warmup_s": round(result.warmup_s, 2),
        "contention": None if result.contention is None else round(result.contention, 3),
        "load_before": round(result.load_before, 2),
        "load_after": round(result.load_after, 2),
        "error": result.error or "",
    }


def write_csv(path: Path, rows: Sequence[dict[str, object]]) -> None:
    """``rows`` as CSV (the union of their columns, in order of appearance); nothing is written for no rows."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
