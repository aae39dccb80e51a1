"""The CPU cores this process may use (affinity mask, cgroup quota), and the DataLoader workers they allow."""

import math
import os
from pathlib import Path


def cgroup_cpu_quota(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> float | None:
    """The CPU quota of this process's cgroup in cores (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None
    when there is none (containers and batch systems set one: the cores torch sees are then not the cores it gets)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        path = path.lstrip("/")
        try:
            if controllers == "":
                quota, period = (root / path / "cpu.max").read_text().split()[:2]
            elif "cpu" in controllers.split(","):
                folder = next(p for p in (root / "cpu" / path, root / "cpu") if p.is_dir())
                quota = (folder / "cpu.cfs_quota_us").read_text().strip()
                period = (folder / "cpu.cfs_period_us").read_text().strip()
            else:
                continue
        except (OSError, StopIteration, ValueError):
            continue
        if quota not in ("max", "-1"):
            return int(quota) / int(period)
    return None


def usable_cores() -> int:
    """The CPU cores this process may use: its affinity mask where the OS has one (taskset, a SLURM allocation),
    else all of the machine's, and no more than its cgroup CPU quota rounded up; at least 1."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota)) if quota is not None else cores)


def default_workers(processes_per_node: int = 1, cap: int = 8) -> int:
    """DataLoader workers per process when ``num_workers`` is null: this machine's usable CPU cores shared among
    the node's training processes, at most ``cap`` (more rarely helps and costs memory), at least 1."""
    return max(1, min(cap, usable_cores() // max(1, processes_per_node)))
