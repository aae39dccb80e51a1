"""torch's CPU threads follow the cores this run actually gets, so a run beside other work slows in proportion.

Measured on a 2-core Intel Xeon (README, "Sharing the CPU"): one training step of the tiny network took
0.26 s with two intra-op threads and 0.35 s with one when the machine was idle, but 4.2 s with two and 0.38 s with
one beside one busy process. With a core taken, the OpenMP threads of every operator wait at their barrier for a
thread that has no core (the kernel gives each session an equal share of the CPU, so two threads of ours share one
core). ``OMP_WAIT_POLICY=PASSIVE`` did not help there (6.9 s) and cost 60 % when idle, so the wait policy is left
as it is. What works is the thread count: as many threads as cores that are free for this run, re-chosen every
``interval`` seconds from what the other processes used in the last one (``/proc/stat`` minus this process and its
DataLoader workers), within the cores this process may use (affinity mask and cgroup CPU quota). On an idle
machine this is torch's own default; the check costs about a millisecond a second.

``cpu_threads: N`` (train.yaml, eval.yaml) or ``OMP_NUM_THREADS=N`` fixes the count instead.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from datamodules.cpu_cores import usable_cores

log = logging.getLogger(__name__)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_seconds() -> float | None:
    """CPU seconds every process of the machine has run (all cores), from ``/proc/stat``; None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: busy is everything but idle and iowait
    ticks = [int(x) for x in fields]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLOCK_TICKS


def _process_seconds(stat: str) -> float:
    """utime + stime of one ``/proc/<pid>/stat`` line (the name may hold spaces: fields count from its ')')."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _own_busy_seconds() -> float:
    """CPU seconds of this process (all its threads, and its children that have exited) and of its child processes
    that still run (DataLoader workers), whose time the kernel adds to ours only once they have exited."""
    me = os.getpid()
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(entry.name) == me:  # with the time of its exited children (cutime, cstime): reaped workers
            total += _process_seconds(stat) + (int(fields[13]) + int(fields[14])) / CLOCK_TICKS
        elif int(fields[1]) == me:
            total += _process_seconds(stat)
    return total


def fixed_threads(setting: int | None) -> int | None:
    """The thread count the user fixed: ``cpu_threads`` if given, else ``OMP_NUM_THREADS``, else None (adapt)."""
    if setting is not None:
        if int(setting) < 1:
            raise ValueError(f"cpu_threads={setting}: give a number of threads >= 1, or null to follow the free cores")
        return int(setting)
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else None


def threads_for(cores: int, others_busy: float) -> int:
    """Threads for ``cores`` usable cores when other processes kept ``others_busy`` cores busy: the free ones,
    rounded (a neighbour using a fifth of a core does not cost a thread), at least one."""
    return max(1, min(cores, round(cores - others_busy)))


class CpuThreads(L.Callback):
    """Sets torch's intra-op threads on CPU runs: fixed when the user says so, else the cores free for this run,
    re-checked every ``interval`` seconds at the end of a training, validation, test or prediction batch."""

    def __init__(self, threads: int | None = None, interval: float = 1.0) -> None:
        self.fixed = fixed_threads(threads)
        self.interval = interval
        self.cores = usable_cores()
        self._last: tuple[float, float, float] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type != "cpu":
            return
        self.start()

    def start(self) -> None:
        """Set the fixed count, or all usable cores and the first sample of what the others use."""
        if self.fixed is not None:
            torch.set_num_threads(self.fixed)
            return
        torch.set_num_threads(self.cores)
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        machine = machine_busy_seconds()
        return None if machine is None else (time.monotonic(), machine, _own_busy_seconds())

    def adapt(self) -> None:
        """Re-choose the thread count if ``interval`` seconds have passed since the last choice."""
        if self._last is None or time.monotonic() - self._last[0] < self.interval:
            return
        now = self._sample()
        if now is None:
            return
        elapsed = now[0] - self._last[0]
        others = max(0.0, (now[1] - self._last[1]) - (now[2] - self._last[2])) / elapsed
        self._last = now
        threads = threads_for(self.cores, others)
        if threads != torch.get_num_threads():
            log.debug("cpu threads: %d (other processes used %.2f of %d cores)", threads, others, self.cores)
            torch.set_num_threads(threads)

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.adapt()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.adapt()

    def on_test_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.adapt()

    def on_predict_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.adapt()
