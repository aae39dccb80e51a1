"""The fresh-process protocol shared by the measuring workers (:mod:`benchmarks.measure`, :mod:`benchmarks.loops`):
cases go to ``python -m <module> '<JSON>'`` and come back as one JSON line, with the torch thread count passed
through the environment; and :class:`Contention`, the other processes' share of the CPU while something ran."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

ROOT = Path(__file__).resolve().parents[1]


class Contention:
    """Share of the machine's CPU time used by *other* processes while a phase ran (Linux ``/proc/stat``).

    ``(busy jiffies of all CPUs - this process's CPU time) / (wall time x cores)``, steal time included:
    0 on a quiet machine, 0.5 when other work kept one of two cores busy. ``None`` where /proc is missing.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        values = [int(v) for v in fields]
        busy = sum(values) - values[3] - values[4]  # all but idle and iowait
        own = os.times()
        return busy / ticks, own.user + own.system, time.perf_counter()

    def others(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy, own, wall = (e - s for e, s in zip(end, self.start, strict=True))
        return max(0.0, (busy - own) / (wall * (os.cpu_count() or 1)))


THREADS_ENV = "RESATTN_BENCH_THREADS"


def set_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads, or ``$RESATTN_BENCH_THREADS`` when 0 (torch's default without either)."""
    threads = threads or int(os.environ.get(THREADS_ENV, 0))
    if threads:
        torch.set_num_threads(threads)


def worker_env(threads: int = 0) -> dict[str, str]:
    """Environment of a measuring subprocess: this checkout on the path, and the thread count if given."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if threads:
        env[THREADS_ENV] = str(threads)
    return env


R = TypeVar("R")


def run_worker(
    module: str,
    cases: Sequence[Any],
    parse: Callable[[dict], R],
    failed: Callable[[Any, str], R],
    timeout: float | None,
    threads: int,
) -> list[R]:
    """``python -m <module> '<cases as JSON>'`` in a fresh process (see :func:`worker_main`), one result per case.

    A failure of the whole process (timeout, crash, no JSON line) comes back as ``failed(case, message)`` for
    every case, so one bad case never stops a benchmark run.
    """
    payload = json.dumps([dataclasses.asdict(case) for case in cases])
    try:
        proc = subprocess.run(
            [sys.executable, "-m", module, payload],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=worker_env(threads),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return [failed(case, f"timeout after {timeout}s") for case in cases]
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not lines[-1].startswith("["):
        message = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return [failed(case, message) for case in cases]
    return [parse(raw) for raw in json.loads(lines[-1])]


def worker_main(
    module: str,
    argv: list[str] | None,
    case_type: type,
    measure_cases: Callable[[list[Any]], list[Any]],
    failed: Callable[[Any, str], Any],
) -> None:
    """The worker side of :func:`run_worker`: measure the cases of the JSON argument and print the results as one
    JSON line, an exception included (as ``failed`` results), so the parent reports it and carries on."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit(f"usage: python -m {module} '<list of {case_type.__name__}s as JSON>'")
    cases = [case_type(**raw) for raw in json.loads(args[0])]
    try:
        results = measure_cases(cases)
    except Exception as err:
        message = f"{type(err).__name__}: {err}"[:300]
        results = [failed(case, message) for case in cases]
    print(json.dumps([dataclasses.asdict(result) for result in results]))


class RepeatStats:
    """Median and spread of ``img_per_s`` (one throughput per timed repeat), for the result dataclasses."""

    img_per_s: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.img_per_s)

    @property
    def spread_pct(self) -> float:
        """``(max - min) / median`` of the repeats, in percent."""
        return 100.0 * (max(self.img_per_s) - min(self.img_per_s)) / self.median
