"""torch's CPU threads follow the cores free for the run: cgroup quotas, the user's choice, a busy neighbour."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from datamodules.cpu_cores import cgroup_cpu_quota, usable_cores
from lightning_modules.cpu_threads import CpuThreads, _own_busy_seconds, fixed_threads, threads_for

BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass"


def test_the_cgroup_quota_is_read_from_v2_and_v1_files(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "job" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "cgroup2").write_text("0::/job\n")
    assert cgroup_cpu_quota(tmp_path / "cgroup2", v2) == 1.5
    (v2 / "job" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path / "cgroup2", v2) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu" / "slurm").mkdir(parents=True)
    (v1 / "cpu" / "slurm" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "slurm" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cgroup1").write_text("4:memory:/slurm\n3:cpu,cpuacct:/slurm\n0::/\n")
    assert cgroup_cpu_quota(tmp_path / "cgroup1", v1) == 3.0
    assert cgroup_cpu_quota(tmp_path / "missing", v1) is None
    assert usable_cores() >= 1


def test_threads_are_the_free_cores() -> None:
    assert [threads_for(2, busy) for busy in (0.0, 0.2, 0.6, 1.0, 2.0, 5.0)] == [2, 2, 1, 1, 1, 1]
    assert threads_for(8, 3.1) == 5


def test_the_user_can_fix_the_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert fixed_threads(None) is None
    assert fixed_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert fixed_threads(None) == 2
    assert fixed_threads(1) == 1  # the config wins
    with pytest.raises(ValueError, match=r"cpu_threads=0: give a number of threads >= 1, or null"):
        fixed_threads(0)


def test_the_cpu_time_of_running_children_counts_as_ours() -> None:
    before = _own_busy_seconds()
    child = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=1.5)])
    time.sleep(1.2)
    during = _own_busy_seconds()
    child.wait()
    assert during - before > 0.2  # the child's time, while it runs (the kernel adds it to ours only at its exit)


@pytest.mark.skipif(usable_cores() < 2, reason="needs two cores")
def test_a_busy_neighbour_takes_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that is not ours (started through a shell that exits, so not our child) keeps a core busy: the
    next check gives torch one thread fewer."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    subprocess.run(["sh", "-c", f"{sys.executable} -c '{BUSY.format(seconds=3)}' >/dev/null 2>&1 &"], check=True)
    try:
        callback = CpuThreads(interval=1.0)
        callback.start()
        assert torch.get_num_threads() == callback.cores
        time.sleep(1.1)
        callback.adapt()
        assert torch.get_num_threads() <= callback.cores - 1
    finally:
        torch.set_num_threads(threads)
