"""Tables (Markdown and CSV) and the machine description for the benchmark results.

A measurement becomes one flat CSV row (:func:`result_row`, :func:`loop_row`); :func:`result_from_row` and
:func:`loop_result_from_row` read such a row back, so that the tables can be rendered from saved CSV files."""

from __future__ import annotations

import csv
import datetime
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from benchmarks.loops import LoopCase, LoopResult
from benchmarks.measure import PHASES, Case, PhaseResult, Result

Row = dict[str, str]  # one CSV row as read back: every value as its text, "" for none


def machine(threads: str, device: str) -> dict[str, str]:
    """CPU/GPU model, core count, threads and library versions: where the numbers were measured (the GPU is
    ``device``'s when that is a CUDA device)."""
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
    gpu = "none"
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(torch.device(device) if device.startswith("cuda") else 0)
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


def as_text(rows: Sequence[Mapping[str, object]]) -> list[Row]:
    """``rows`` as :func:`write_csv` and :func:`read_csv` turn them into text: the union of their columns, each
    value as ``str``, ``""`` for ``None`` or a missing column."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [{key: "" if row.get(key) is None else str(row[key]) for key in columns} for row in rows]


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    """``rows`` (all with the same columns, see :func:`as_text`) as CSV; nothing is written for no rows."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[Row]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def number(text: str) -> float | None:
    return float(text) if text else None


def numbers(text: str) -> list[float]:
    """The values of a ``;``-separated column (every repeat of a measurement)."""
    return [float(v) for v in text.split(";") if v]


def result_from_row(row: Row) -> Result:
    """The :class:`Result` of a :func:`result_row` (values rounded as in the CSV)."""
    case = Case(
        row["library"],
        row["model"],
        int(row["size"]),
        int(row["batch"]),
        row["precision"],
        row["memory_format"],
        row["mode"],
        device=row["device"],
    )
    phases = {
        phase: PhaseResult(
            numbers(row[f"{phase}_img_s_repeats"]),
            number(row[f"{phase}_peak_mem_mib"]),
            float(row[f"{phase}_warmup_s"]),
            number(row[f"{phase}_contention"]),
        )
        for phase in PHASES
        if row[f"{phase}_img_s_repeats"]
    }
    return Result(
        case,
        float(row["params_m"]),
        number(row["gmacs"]),
        phases,
        threads=int(row["threads"]),
        load_before=float(row["load_before"]),
        load_after=float(row["load_after"]),
        error=row["error"] or None,
    )


def loop_result_from_row(row: Row) -> LoopResult:
    """The :class:`LoopResult` of a :func:`loop_row` (its case without the fields the CSV does not hold)."""
    case = LoopCase(
        row["loop"],
        arch=row["arch"],
        batch=int(row["batch"]),
        data=row["data"],
        precision=row["precision"],
        channels_last=row["channels_last"] == "True",
        compile=row["compile"] == "True",
    )
    return LoopResult(
        case,
        numbers(row["img_s_repeats"]),
        float(row["step_ms"]),
        float(row["warmup_s"]),
        number(row["contention"]),
        int(row["threads"]),
        float(row["load_before"]),
        float(row["load_after"]),
        row["error"] or None,
    )
