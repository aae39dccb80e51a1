"""pytest's hooks and fixtures for the whole suite; the shared helpers are in helpers.py."""

from __future__ import annotations

import os

import pytest
import torch

from datamodules.cpu_cores import usable_cores

# W&B never reaches a server from the tests (in-process loggers included), whatever the user's settings.
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test``) the cores are shared: each worker, and every script it runs, uses its share
    of them for torch's threads rather than all of them (oversubscribed cores run the suite slower than one worker)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, usable_cores() // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Every test starts from the same torch random state."""
    torch.manual_seed(0)
