"""``python -m benchmarks.run``: measure the sections (:mod:`benchmarks.sections`), each group of cases in a fresh
process (``--threads auto``: the cores other processes leave idle), one CSV record per section (the case, its img/s
per round, peak memory, other processes' CPU share, command, date and machine), then render them.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, fields, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import lightning
import timm
import torch

from benchmarks import render
from benchmarks.cases import PRECISIONS, ROOT, Case
from benchmarks.records import TITLES, fmt_pct
from benchmarks.sections import COMPILE_ON_CPU, FORMATS, MODES, QUICK_SECTIONS, SECTIONS, Group, resattn_default
from benchmarks.worker import Contention, run_in_process

COLUMNS = ["section", "label", *(f.name for f in fields(Case))]
COLUMNS += ["threads", "img_s", "peak_mib", "warmup_s", "others_cpu", "params_m", "gmacs", "pid", "error"]
COLUMNS += ["date", "command", "cpu", "cores", "gpu", "versions"]


def idle_cores() -> int:
    """The cores other processes leave idle right now (sampled for one second), at least one."""
    cores, meter = os.cpu_count() or 1, Contention()
    time.sleep(1.0)
    return max(1, cores - round((meter.others() or 0.0) * cores))


class Runner:
    """Runs groups in fresh processes (an identical group only once) and prints what each one took."""

    def __init__(self, settings: argparse.Namespace) -> None:
        self.settings = settings
        self.done: dict[tuple[Case, ...], list[dict[str, Any]]] = {}

    def process(self, cases: Sequence[Case], threads: int | None, timeout: float | None = None) -> list[dict[str, Any]]:
        key = tuple(cases)
        if key not in self.done:
            s = self.settings
            if threads is None:
                threads = s.threads if s.threads or s.gpu else idle_cores()
            start = time.perf_counter()
            self.done[key] = run_in_process(cases, threads, timeout or s.timeout)
            first = self.done[key][0]
            note = first.get("error") or f"{first['threads']} threads, others' CPU {fmt_pct(first['others_cpu'])}"
            what = ", ".join(sorted({f"{c.loop} {c.arch or c.data}" for c in cases}))
            print(f"  {len(cases)} case(s) ({what[:90]}): {time.perf_counter() - start:.0f} s, {note}", flush=True)
        return self.done[key]

    def group(self, group: Group) -> list[dict[str, Any]]:
        """The group's result rows, with the peak memory of ``group.memory``'s loops from processes of their own."""
        cases = [case for _, case in group.cases]
        results = [dict(r) for r in self.process(cases, group.threads, group.timeout)]
        if len(cases) > 1:
            for case, result in zip(cases, results, strict=True):
                if case.loop in group.memory and not result.get("error"):
                    alone = self.process([replace(case, warmup=1, repeats=1)], group.threads)[0]
                    result["peak_mib"] = alone.get("peak_mib")
        return results


def machine(device: str) -> dict[str, str]:
    """Where and with what the numbers were measured."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    cpu = (names or [platform.processor() or platform.machine()])[0]
    try:
        pytorchcv = version("pytorchcv")
    except PackageNotFoundError:
        pytorchcv = "not installed"
    versions = {"python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__}
    versions |= {"lightning": lightning.__version__, "pytorchcv": pytorchcv}
    return {
        "cpu": f"{cpu}, {torch.backends.cpu.get_cpu_capability()}",
        "cores": str(os.cpu_count()),
        "gpu": torch.cuda.get_device_name(torch.device(device)) if device != "cpu" else "none",
        "versions": ", ".join(f"{name} {v}" for name, v in versions.items()),
    }


def _text(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(f"{v:.{digits}f}" for v in value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def record(section: str, label: str, case: Case, result: dict[str, Any], meta: dict[str, str]) -> dict[str, str]:
    """One CSV row: the case, what was measured (rounded) and where."""
    digits = {"img_s": 3, "peak_mib": 1, "warmup_s": 2, "others_cpu": 3, "params_m": 3, "gmacs": 3}
    measured = {key: _text(result.get(key), digits.get(key, 0)) for key in COLUMNS if key in result or key == "error"}
    described = {"section": section, "label": label, **asdict(case)}
    return {key: str(value) for key, value in described.items()} | measured | meta


def write_csv(path: Path, rows: Sequence[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _items(accepted: Sequence[str] = ()) -> Callable[[str], tuple[str, ...]]:
    """A comma-separated list, each item one of ``accepted`` where given."""

    def parse(text: str) -> tuple[str, ...]:
        values = tuple(v for v in text.split(",") if v)
        if accepted and (unknown := [v for v in values if v not in accepted]):
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; accepted: {', '.join(accepted)}")
        return values

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, its defaults that depend on ``--quick`` and the device filled in, plus ``gpu`` and
    ``default``, resattn's ``(precision, channels_last, compile)`` on the device."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Throughput and memory of resattn: one CSV record per section, Markdown and plots from them.",
        epilog="sections: " + ", ".join(SECTIONS) + " (BENCHMARKS.md says what each measures)",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help=f"a few minutes: {','.join(QUICK_SECTIONS)}, fewer cases and repeats")
    add("--sections", type=_items(tuple(SECTIONS)), help="comma-separated (default: all; --quick: its three)")
    add("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    add("--variants", type=_items(), help="models section: timm names (default: Attention-56/92, ImageNet and CIFAR)")
    add("--sizes", type=_items(), default=(), help="models section: input sizes (default: the variant's)")
    add("--precisions", type=_items(tuple(PRECISIONS)), default=("32-true", "bf16-mixed"), help="32-true,bf16-mixed")
    add("--formats", type=_items(FORMATS), default=FORMATS, help="memory formats: nchw,channels_last")
    modes = f"models section: eager,compile (default: both on a GPU; on a CPU eager, plus {', '.join(COMPILE_ON_CPU)}"
    add("--modes", type=_items(MODES), help=modes + " compiled at resattn's default)")
    add("--batch", help="batch at >= 128 px (default 4 on a CPU, 64 on a GPU, 2 with --quick)")
    add("--small-batch", help="batch at CIFAR sizes: loops, data (default 64, --quick 32)")
    add("--warmup", help="untimed steps per case (default: per section)")
    add("--repeats", help="timed rounds per case (default 3; compare 5; --quick 2)")
    add("--steps", help="steps per round (default: per section and device)")
    add("--loop-arch", default="resattn56_cifar", help="network of the options and loops sections")
    add("--threads", default="auto", help="torch threads per process; auto (default): the idle cores")
    add("--timeout", type=float, default=1800.0, help="seconds per process (sharing: per round)")
    add("--out", type=Path, help="folder of the CSVs (default benchmarks/results; --quick: a temporary folder)")
    add("--update-doc", action="store_true", help="also write the rendered tables into BENCHMARKS.md")
    add("--no-plot", action="store_true", help="write no plots")
    args = parser.parse_args(argv)
    if args.device != "cpu" and not args.device.startswith("cuda"):
        parser.error(f"--device: expected cpu or cuda[:N], got {args.device!r}")
    for name in ("sizes", "batch", "small_batch", "warmup", "repeats", "steps", "threads"):  # whole numbers
        value, least = getattr(args, name), 0 if name == "warmup" else 1
        texts = value if isinstance(value, tuple) else () if value in (None, "auto") else (value,)
        if wrong := [text for text in texts if not text.isdigit() or int(text) < least]:
            parser.error(f"--{name.replace('_', '-')}: expected a whole number >= {least}, got {wrong[0]!r}")
        numbers = tuple(int(text) for text in texts)
        setattr(args, name, numbers if isinstance(value, tuple) else numbers[0] if numbers else None)
    args.threads = args.threads or 0  # 0: the idle cores
    args.sections = args.sections or (QUICK_SECTIONS if args.quick else tuple(SECTIONS))
    args.gpu, args.default = args.device != "cpu", resattn_default(args.device)
    args.batch = args.batch or (64 if args.gpu else 2 if args.quick else 4)
    args.small_batch = args.small_batch or (32 if args.quick else 64)
    quick_out = Path(tempfile.gettempdir()) / "resattn-benchmarks-quick"
    args.out = args.out or (quick_out if args.quick else ROOT / "benchmarks" / "results")
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    """Measure the sections, write ``<out>/<section>.csv`` after each, then render the folder."""
    s = parse_args(argv)
    command = "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    started, runner = time.perf_counter(), Runner(s)
    for section in s.sections:
        print(f"[{section}] {TITLES[section]}", flush=True)
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command}
        meta |= machine(s.device)
        rows = []
        for group in SECTIONS[section](s):
            for (label, case), result in zip(group.cases, runner.group(group), strict=True):
                rows.append(record(section, label, case, result, meta))
        write_csv(s.out / f"{section}.csv", rows)
    render.write(s.out, plot=not s.no_plot, update=s.update_doc)
    print(f"wrote {s.out} ({(time.perf_counter() - started) / 60:.1f} min)", flush=True)
    return s.out


if __name__ == "__main__":
    main()
