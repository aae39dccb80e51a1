"""The one timing loop (:func:`measure`: warm-up, interleaved rounds, other processes' CPU share, peak memory; see
BENCHMARKS.md, "How it measures"), the fresh process it runs in (:func:`run_in_process`; ``python -m
benchmarks.worker '<JSON>'`` is the other end), and the ``train.py`` case, which times a whole command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.cases import ROOT, Case, Stamp, Subject, build
from lightning_modules.cpu_threads import machine_busy_seconds

# The train.py loop's command: a short training, its data defaults made explicit, logs elsewhere, no resuming.
TRAIN_PY = (
    "model={arch} data={data} data.batch_size={batch} data.num_workers={workers} trainer.max_epochs=1 "
    "trainer.limit_train_batches={steps} trainer.limit_val_batches=1 trainer.limit_test_batches=1 logger=csv "
    "test=false auto_resume=false"
)
# The busy neighbour: pure Python, one core; it ends when its parent (argv[1]) is gone, even if that one was killed.
NEIGHBOUR = "import os, sys\nwhile os.getppid() == int(sys.argv[1]):\n    for _ in range(1_000_000):\n        pass\n"


class Contention:
    """Share of the machine's CPU time used by *other* processes since it was made (Linux ``/proc/stat``):
    ``(busy time of all CPUs - this process's CPU time) / (wall time x cores)``, 0 on a quiet machine, 0.5 when
    other work kept one of two cores busy; ``None`` where /proc is missing. With ``children`` the CPU time of the
    child processes that have ended and been waited for (with theirs) counts as this process's."""

    def __init__(self, children: bool = False) -> None:
        self.children = children
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        busy = machine_busy_seconds()
        if busy is None:
            return None
        own = os.times()
        children = own.children_user + own.children_system if self.children else 0.0
        return busy, own.user + own.system + children, time.perf_counter()

    def others(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy, own, wall = (e - s for e, s in zip(end, self.start, strict=True))
        return max(0.0, (busy - own) / (wall * (os.cpu_count() or 1)))


def _script(case: Case) -> Subject:
    """``python train.py`` for ``n`` training batches, start to exit, its logs in a temporary folder, beside a busy
    process in a session of its own (another scheduling group under sched_autogroup) for a ``neighbour`` case;
    the other processes' CPU share leaves out train.py, its DataLoader workers and the neighbour."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # it would fix train.py's threads
    shares: list[float] = []  # other processes' CPU share during each timed run

    def run(n: int, stamp: Stamp) -> None:
        if n == 0:
            return
        meter = Contention(children=True)
        with tempfile.TemporaryDirectory(prefix="resattn-bench-") as logs:
            overrides = TRAIN_PY.format(**{**dataclasses.asdict(case), "steps": n}).split()
            command = [sys.executable, "train.py", *overrides, f"paths.log_dir={logs}"]
            command += [f"cpu_threads={case.cpu_threads}"] if case.cpu_threads else []
            busy = [sys.executable, "-c", NEIGHBOUR, str(os.getpid())]
            neighbour = subprocess.Popen(busy, start_new_session=True) if case.neighbour else None
            try:
                stamp()
                proc = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                stamp()
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
            raise RuntimeError(f"train.py exited with {proc.returncode}: {lines[-1]}")
        if (share := meter.others()) is not None:
            shares.append(share)

    return Subject(run, others=lambda: shares)


def _peak_memory(device: torch.device, reset: bool = False) -> float:
    """The peak memory (MiB) since the last reset: CUDA max allocated, or the CPU's resident set high-water mark."""
    if device.type == "cuda":
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    if reset:  # writing 5 resets VmHWM to the current RSS
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def measure(cases: Sequence[Case]) -> list[dict[str, Any]]:
    """Build every case, warm each up, then time their interleaved rounds (see the module docstring); one result
    row per case."""
    torch.manual_seed(0)
    device = torch.device(cases[0].device)
    _peak_memory(device, reset=True)
    scratch = Path(tempfile.mkdtemp(prefix="resattn-bench-"))
    subjects = []
    for i, case in enumerate(cases):
        subjects.append(_script(case) if case.loop == "train.py" else build(case, scratch / str(i)))
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    warmup_s = []
    for case, subject in zip(cases, subjects, strict=True):
        start = time.perf_counter()
        subject.run(case.warmup, lambda: None)
        sync()
        warmup_s.append(time.perf_counter() - start)
    rates: list[list[float]] = [[] for _ in cases]
    others = Contention()
    for repeat in range(max(case.repeats for case in cases)):
        order = list(enumerate(zip(cases, subjects, strict=True)))
        for i, (case, subject) in order if repeat % 2 == 0 else order[::-1]:
            if repeat < case.repeats:
                stamps: list[float] = []

                def stamp(stamps: list[float] = stamps, last: int = case.steps + 1) -> None:
                    if len(stamps) in (0, last - 1):  # the round's first and last stamp
                        sync()
                    stamps.append(time.perf_counter())

                subject.run(case.steps, stamp)
                rates[i].append(case.steps * case.batch / (stamps[-1] - stamps[0]))
    share = others.others()
    peak = _peak_memory(device) if len(cases) == 1 and cases[0].loop != "train.py" else None  # not train.py's
    return [
        {
            "threads": torch.get_num_threads(),
            "img_s": rate,
            "peak_mib": peak,
            "warmup_s": warm,
            "others_cpu": subject.others() if subject.others else share,
            "params_m": subject.params_m,
            "gmacs": subject.gmacs,
            "pid": os.getpid(),
        }
        for rate, warm, subject in zip(rates, warmup_s, subjects, strict=True)
    ]


def run_in_process(cases: Sequence[Case], threads: int = 0, timeout: float | None = None) -> list[dict[str, Any]]:
    """:func:`measure` in a fresh Python process with ``threads`` torch threads (0: torch's default), so that no
    allocator state or compile cache carries over and the peak memory is the cases' own. A failure of the
    process (an exception, a timeout) comes back as an ``error`` in every case's row."""
    payload = json.dumps({"threads": threads, "cases": [dataclasses.asdict(case) for case in cases]})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "benchmarks.worker", payload]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"error": f"timeout after {timeout:.0f} s"} for _ in cases]
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines and lines[-1].startswith("["):
        return json.loads(lines[-1])
    error = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}, no output"])[-1][:300]
    return [{"error": error} for _ in cases]


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        raise SystemExit('usage: python -m benchmarks.worker \'{"threads": N, "cases": [<Case fields>, ...]}\'')
    payload = json.loads(args[0])
    if payload["threads"]:
        torch.set_num_threads(payload["threads"])
    with contextlib.suppress(ImportError):  # both libraries in every process, so that their peak memory starts alike
        import pytorchcv.model_provider  # noqa: F401
    warnings.simplefilter("ignore")  # DataLoader's worker count, litdata's and torchvision's notes
    print(json.dumps(measure([Case(**raw) for raw in payload["cases"]])))


if __name__ == "__main__":
    main()
