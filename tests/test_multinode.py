"""Two-node DDP on one machine: two torchrun launches with ``--nnodes 2``, one process each, gloo over localhost,
as two hosts of a cluster start them (SLURM's two tasks run the same command with their own node rank). The run
directory is on a file system both nodes see, as a cluster's shared one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from files import write_coded_tree
from helpers import ROOT, SMOKE_TRAINING, latest_step, start_script

CLASSES = ["ant", "bee", "cow"]
EPOCHS = 6  # 36 training images, 18 per node: 3 steps of 6 per epoch
STEPS = 3 * EPOCHS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(cwd: Path, overrides: list[str], session: int) -> list[subprocess.Popen]:
    """Node 0 and node 1 of one job, each a torchrun launch (a host of its own); their output in
    ``cwd/node<rank>-<session>.txt``."""
    port = free_port()
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return [
        start_script(
            "train.py",
            *overrides,
            cwd=cwd,
            output=cwd / f"node{node}-{session}.txt",
            env=env,
            launcher=(
                *("-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node)),
                *("--master_addr", "127.0.0.1", "--master_port", str(port)),
            ),
        )
        for node in (0, 1)
    ]


def kill_node(launcher: subprocess.Popen) -> None:
    """SIGKILL a node: its torchrun launcher and the training processes it started (each in a session of its own)."""
    pids = [launcher.pid]
    for pid in pids:  # grows while it runs: the children of each process found
        with contextlib.suppress(OSError):
            pids += [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def run_session(cwd: Path, overrides: list[str], session: int, kill: int | None = None, after: int = 0) -> list[int]:
    """Start both nodes; with ``kill``, SIGKILL that node (its launcher and process) once last.ckpt holds step
    ``after``. The nodes' exit statuses."""
    nodes = two_nodes(cwd, overrides, session)
    try:
        if kill is not None:
            deadline = time.time() + 240
            while time.time() < deadline and all(node.poll() is None for node in nodes):
                run = next((cwd / "logs" / "train" / "runs").glob("*"), None)
                if run is not None and latest_step(run) >= after:
                    break
                time.sleep(0.05)
            assert all(node.poll() is None for node in nodes), "a node ended before the other could be killed"
            kill_node(nodes[kill])
        return [node.wait(timeout=240) for node in nodes]
    finally:
        for node in nodes:
            kill_node(node)


@pytest.mark.slow
def test_two_nodes_train_disjoint_shares_and_resume_after_either_is_killed(tmp_path: Path) -> None:
    write_coded_tree(tmp_path / "tree" / "train", CLASSES, per_class=16)
    write_coded_tree(tmp_path / "tree" / "test", CLASSES, per_class=2)
    overrides = [
        *SMOKE_TRAINING,
        "optimizer.lr=0.01",
        *("data=folder", f"data.root={tmp_path / 'tree'}", "data.image_size=32", "data.batch_size=6"),
        *("data.val_fraction=0.25", "data.num_workers=0"),
        *("trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2", f"trainer.max_epochs={EPOCHS}"),
        "logger=csv",
        "callbacks.last_checkpoint.every_n_train_steps=1",
        "+callbacks.record._target_=ddp_probe.RecordSamples",
        f"+callbacks.record.out={tmp_path / 'seen'}",
        "+callbacks.record.pause=0.3",  # time to kill a node at a given step
    ]
    # Node 1 killed: node 0 fails at its next collective, and records the failure (rank zero owns the record).
    statuses = run_session(tmp_path, overrides, 1, kill=1, after=4)
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    first = latest_step(run)
    assert statuses[0] not in (0, None) and 4 <= first < STEPS
    status = json.loads((run / "run.json").read_text())["status"]
    assert status["state"] == "failed" and status["step"] >= first

    # Rerun on both nodes: they resume from rank zero's last.ckpt; node 0 (the rank zero) is killed this time.
    statuses = run_session(tmp_path, overrides, 2, kill=0, after=first + 3)
    second = latest_step(run)
    assert statuses[1] not in (0, None) and first + 3 <= second < STEPS
    assert "Resuming from" in (tmp_path / "node0-2.txt").read_text()

    # Once more: both resume and finish; every epoch of this session, the nodes trained on disjoint halves.
    assert run_session(tmp_path, overrides, 3) == [0, 0]
    assert "Resuming from" in (tmp_path / "node0-3.txt").read_text() and latest_step(run) == STEPS
    record = json.loads((run / "run.json").read_text())
    assert record["status"]["state"] == "finished" and record["finished"]["tested"]
    seen = [json.loads((tmp_path / "seen" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert seen[0].keys() == seen[1].keys() and str(EPOCHS - 1) in seen[0]
    for epoch in seen[0]:
        assert len(seen[0][epoch]) == len(seen[1][epoch]) and not set(seen[0][epoch]) & set(seen[1][epoch])
    names = sorted(path.name for path in (run / "checkpoints").iterdir())
    assert names[-1] == "last.ckpt" and len(names) == 2 and names[0].startswith("best-")  # no partial file left
