"""What the train and eval tasks share: the objects a composed config's sections describe, the data checked before
any logger writes a file, the Hydra job they run in, and how their W&B runs end."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict

from lightning_modules.stopping import SessionEnd


def _entries(section: DictConfig | None) -> dict[str, DictConfig]:
    """The entries of a callbacks/logger section that have a ``_target_``."""
    return {name: entry for name, entry in (section or {}).items() if entry is not None and "_target_" in entry}


def uses_wandb(section: DictConfig | None) -> bool:
    """Whether a logger section has a W&B logger (the task then gives it its run: group, tags, id)."""
    return any(issubclass(get_class(entry._target_), WandbLogger) for entry in _entries(section).values())


def instantiate_dict(section: DictConfig | None, kind: type, wandb: Mapping[str, Any] | None = None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger section; a W&B logger gets ``wandb`` (its run id, group and tags:
    :mod:`lightning_modules.wandb_runs`)."""
    objects = []
    for name, entry in _entries(section).items():
        is_wandb = issubclass(get_class(entry._target_), WandbLogger)
        obj = instantiate(entry, **wandb) if is_wandb and wandb else instantiate(entry)
        if not isinstance(obj, kind):
            raise TypeError(f"{name}: expected a {kind.__name__}, got {type(obj).__name__} from {entry._target_}")
        objects.append(obj)
    return objects


def prepare_datamodule(cfg: DictConfig, **overrides: Any) -> L.LightningDataModule:
    """The datamodule, its data checked (downloaded when asked) and loaded: a missing dataset is reported here,
    before any logger writes a file. Values found in the data (``num_classes`` of a folder tree) are written into
    ``cfg.data`` so that the logged config is complete.

    Every process prepares the data: downloads into one folder take turns through a lock file (the datamodules'
    ``_download``; ``datasets`` locks its cache itself), so the ranks of a multi-node job fill a node-local data
    folder each, or wait for one download into a shared one, instead of looking for files still being fetched."""
    datamodule = instantiate(cfg.data, **overrides)
    datamodule.prepare_data()
    datamodule.setup("fit")
    with open_dict(cfg):
        cfg.data.num_classes = datamodule.num_classes
    return datamodule


def hydra_job() -> tuple[DictConfig | None, list[str], str | None]:
    """``(hydra config, command-line overrides, data config choice)`` of this job, when run through Hydra."""
    if not HydraConfig.initialized():
        return None, [], None
    hydra_cfg = HydraConfig.get()
    return hydra_cfg, list(hydra_cfg.overrides.task), hydra_cfg.runtime.choices.get("data")


def metrics_as_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float, torch.Tensor)) and torch.numel(torch.as_tensor(v)) == 1
    }


def finish_wandb(loggers: list[Logger], end: SessionEnd | None = None) -> None:
    """Close W&B runs so that each multirun job gets a run of its own (a no-op on other ranks), with the exit code of
    how the session ended (``end``; None: finished): a failed run gets exit code 1, which W&B shows as failed. The
    summary says how it ended (``run/state``) and a failure's one line (``run/error``, emptied by a session that
    does not fail: a resumed W&B run keeps its summary); a stopped run is marked preempting, W&B's state for a run
    that resumes."""
    if rank_zero_only.rank != 0:
        return
    end = end or SessionEnd("finished", 0)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            run.summary.update({"run/state": end.state, "run/error": end.message or ""})
            if end.state == "stopped":
                run.mark_preempting()
            run.finish(exit_code=end.exit_code)
