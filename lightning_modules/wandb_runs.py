"""Where a job's W&B run goes and what it carries, so that a dashboard (``python -m analysis.dashboards``) can slice a
sweep by its swept values.

Every job of a multirun or Optuna sweep is a W&B run of its own, finished when the job ends (its id is kept in the
run directory's ``run.json``, so a resumed job continues its own run):

- **group**: the sweep, named after its folder (``Path(hydra.sweep.dir).name``): the same for every job of the sweep,
  and again when the sweep is rerun or resumed. A single run (no ``-m``) is grouped under its ``task_name`` (the
  single runs of an experiment together). eval.py's runs join the group of the training run whose checkpoint they
  test (kept in that run's ``run.json``). ``logger.wandb.group=<name>`` sets a group of one's own instead.
- **job_type**: ``train`` or ``eval``, **name**: the job's overrides (``conf/logger/wandb.yaml``).
- **tags**: ``logger.wandb.tags`` (the experiment's ``tags``) and ``key=value`` for every value that the sweep of the
  config (``hydra.sweeper.params``: the experiment's grid, the Optuna search space) chose for this job.
- **config** (:func:`wandb_config`): the resolved config, nested (``optimizer.lr``, ``model.net.mask_type``), with
  ``choices``: the option taken in each config group (``choices.model: att56``), which is what the experiments' grids
  sweep.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lightning_modules.config_resolvers import shortened
from lightning_modules.run_directory import RunDirectory

MAX_GROUP = 128  # characters W&B accepts in a group name and in a tag
MAX_TAG = 64
ENTRY = "logger.wandb"  # the W&B logger's entry in the composed config (conf/logger/wandb.yaml)


def _hydra() -> DictConfig | None:
    return HydraConfig.get() if HydraConfig.initialized() else None


def sweep_group(sweep_dir: str | None, task_name: str) -> str:
    """The W&B group of a job: the name of its sweep's folder (``hydra.sweep.dir`` of a multirun), else
    ``task_name``."""
    return shortened(Path(sweep_dir).name if sweep_dir else task_name, MAX_GROUP)


def _sweep_dir(hydra_cfg: DictConfig | None) -> str | None:
    multirun = hydra_cfg is not None and hydra_cfg.get("mode") == RunMode.MULTIRUN
    return str(hydra_cfg.sweep.dir) if multirun else None


def swept_values(hydra_cfg: DictConfig | None) -> list[str]:
    """``key=value`` for each override of this job whose key the config's sweep varies (``hydra.sweeper.params``)."""
    if hydra_cfg is None:
        return []
    swept = {str(key).lstrip("+~") for key in hydra_cfg.sweeper.get("params") or {}}
    values = []
    for override in hydra_cfg.overrides.task:
        key, _, value = override.partition("=")
        if key.lstrip("+~") in swept:
            values.append(f"{key.lstrip('+~')}={value}")
    return values


def config_choices(hydra_cfg: DictConfig | None) -> dict[str, str]:
    """The option taken in each of the project's config groups (``{"model": "att56", "attention": "arl", ...}``);
    Hydra's own groups and unset ones are left out."""
    if hydra_cfg is None:
        return {}
    choices = hydra_cfg.runtime.get("choices") or {}
    return {str(group): str(option) for group, option in choices.items() if option and not group.startswith("hydra")}


def wandb_config(cfg: DictConfig) -> dict[str, Any]:
    """What W&B gets as a run's config: the resolved config, nested, with the config groups' ``choices``."""
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    assert isinstance(resolved, dict)
    choices = config_choices(_hydra())
    return {**resolved, "choices": choices} if choices else resolved


def _tags(cfg: DictConfig, extra: list[str]) -> list[str]:
    configured = OmegaConf.select(cfg, f"{ENTRY}.tags", default=None)
    tags = [str(t) for t in (configured if configured is not None else cfg.get("tags") or [])]
    return list(dict.fromkeys(tag[:MAX_TAG] for tag in [*tags, *extra]))


def training_run(cfg: DictConfig, run: RunDirectory, *, resuming: bool) -> dict[str, Any]:
    """The W&B logger's ``id``, ``group`` and ``tags`` for a training job, the id and group kept in ``run``'s record
    (a resumed job continues its run; evaluations of its checkpoints join its group)."""
    hydra_cfg = _hydra()
    group = OmegaConf.select(cfg, f"{ENTRY}.group", default=None) or sweep_group(_sweep_dir(hydra_cfg), cfg.task_name)
    run.note_wandb_group(group)
    return {
        "id": run.wandb_id(resuming=resuming, new_id=secrets.token_hex(4)),
        "group": group,
        "tags": _tags(cfg, swept_values(hydra_cfg)),
    }


def evaluation_run(cfg: DictConfig) -> dict[str, Any]:
    """The W&B logger's ``group`` and ``tags`` for eval.py: the group of the training run that wrote ``ckpt_path``
    (a checkpoint in ``<run>/checkpoints/``), else as for any job."""
    group = OmegaConf.select(cfg, f"{ENTRY}.group", default=None)
    if not group and cfg.get("ckpt_path"):
        folder = Path(cfg.ckpt_path).resolve().parent
        group = RunDirectory(folder.parent).wandb_group() if folder.name == "checkpoints" else None
    return {"group": group or sweep_group(_sweep_dir(_hydra()), cfg.task_name), "tags": _tags(cfg, [])}
