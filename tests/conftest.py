"""Shared helpers: Hydra composition of the real configs and real runs of train.py / eval.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from torch import nn

from datamodules.cpu_cores import usable_cores
from lightning_modules.config_resolvers import register_resolvers

# W&B never reaches a server from the tests (in-process loggers included), whatever the user's settings.
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# A seconds-long job: the tiny network, briefly trained...
SMOKE_TRAINING = [
    "model=tiny",
    "scheduler=none",
    "optimizer.lr=0.05",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar.refresh_rate=0",
]
# ...on a small learnable synthetic set.
SMOKE_DATA = [
    "data=synthetic",
    "data.image_size=16",
    "data.num_train_samples=192",
    "data.num_test_samples=64",
    "data.batch_size=32",
    "data.eval_batch_size=32",
    "data.noise=0.5",
]
SMOKE = SMOKE_TRAINING + SMOKE_DATA


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


def randomize_bn(module: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so that BN is not (almost) the identity in eval mode."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return module.eval()


def bn(x: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
    """Eval-mode batch norm with the module's statistics, written out."""
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, training=False, eps=m.eps)


def compose_config(config_name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    """The composed config as train.py/eval.py would see it, with its output directory in ``tmp_path``."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} interpolations
    with open_dict(cfg):
        cfg.paths.root_dir = str(ROOT)
        cfg.paths.log_dir = str(tmp_path / "logs")
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.paths.data_dir = str(tmp_path / "data")
        del cfg.hydra
    return cfg


SCRIPT_ENV = {"PYTHONPATH": str(ROOT), "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}


def run_script(
    script: str,
    *args: str,
    cwd: Path,
    check: bool = True,
    timeout: int = 300,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """Run ``python <script> args`` as a user would, from ``cwd`` (so logs/ lands there), ``env`` added and the
    variables in ``unset`` removed."""
    environment = {**os.environ, **SCRIPT_ENV, **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env={name: value for name, value in environment.items() if name not in unset},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{script} {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def start_script(
    script: str,
    *args: str,
    cwd: Path,
    output: Path | None = None,
    process_group: bool = False,
    launcher: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start ``python <launcher> <script> args`` from ``cwd`` in the background, to stop or kill it: its output goes to
    the file ``output`` (else nowhere), and Ctrl-C (SIGINT) reaches it as in a terminal, even where the tests run with
    it ignored. With ``process_group`` it leads a process group of its own (its pid), which ``os.killpg`` signals as a
    terminal does its foreground job (every DDP rank). ``launcher``: e.g. ``-m torch.distributed.run ...``; ``env``:
    variables added."""
    sink = output.open("w") if output is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [sys.executable, *launcher, str(ROOT / script), *args],
            cwd=cwd,
            env={**os.environ, **SCRIPT_ENV, **(env or {})},
            stdout=sink,
            stderr=subprocess.STDOUT if output is not None else subprocess.DEVNULL,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            start_new_session=process_group,
        )
    finally:
        if output is not None:
            sink.close()


def latest_step(run: Path) -> int:
    """The ``global_step`` of a run directory's last.ckpt (-1 before it has one)."""
    path = run / "checkpoints" / "last.ckpt"
    return torch.load(path, weights_only=True)["global_step"] if path.is_file() else -1


def quiet_trainer(tmp_path: Path, **kw: object) -> L.Trainer:
    """A one-epoch CPU Trainer writing nothing (no logger, checkpoints, progress bar or summary); ``kw`` overrides."""
    defaults = dict(
        accelerator="cpu",
        max_epochs=1,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    return L.Trainer(**{**defaults, **kw})
