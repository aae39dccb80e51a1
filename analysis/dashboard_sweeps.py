"""The sweep behind a dashboard, read from the config its ``train.py -m`` command composes (never from a list kept
here): its swept keys, the group its jobs log to, its rows and what its runs log (:mod:`analysis.dashboards`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from hydra.utils import get_class
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from analysis.table_specs import Table, load_tables
from datamodules.configs import compose, options
from lightning_modules.callbacks import AttentionMaskLogger
from lightning_modules.config_resolvers import register_resolvers
from lightning_modules.optim import OPTIMIZERS
from lightning_modules.sweep_folder import SweepFolder
from lightning_modules.wandb_runs import config_choices, sweep_group
from resattn.variants import VARIANTS

SEED = "seed"  # the swept key whose runs repeat a row: the views average over it
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class DashboardError(ValueError):
    """A bad input: the message says what was wrong and what is accepted."""


def experiments() -> list[str]:
    """The experiment files of conf/experiment/, by name."""
    return options("experiment")


def _compose(overrides: Sequence[str], mode: RunMode) -> DictConfig:
    """``conf/train.yaml`` with ``overrides`` as train.py composes it: in ``MULTIRUN`` mode the sweep's own config
    (sweeps left to the sweeper), in ``RUN`` mode one job's; Hydra's node included."""
    register_resolvers()
    try:
        cfg = compose(overrides, multirun=mode == RunMode.MULTIRUN, hydra_config=True)
    except HydraException as err:
        raise DashboardError(f"cannot compose `python train.py -m {' '.join(overrides)}`: {err}") from None
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in the sweep folder's name
    if mode == RunMode.MULTIRUN:
        SweepFolder().on_multirun_start(config=cfg)  # the sweep's own folder, named as train.py -m names it
    return cfg


def lr_key(optimizer: Mapping[str, Any], arch: str) -> str:
    """The name under which Lightning's LearningRateMonitor logs the learning rate (of the first parameter group):
    ``lr-<optimizer class>``, ``/pg1`` added when the optimizer has several groups
    (:func:`lightning_modules.optim.build_optimizer`: one per weight decay; the mask branches' own only when the
    network ``arch`` has attention modules)."""
    name = optimizer.get("name", "sgd")
    if name not in OPTIMIZERS:
        raise DashboardError(f"unknown optimizer.name {name!r}; accepted: {sorted(OPTIMIZERS)}")
    masks = arch in VARIANTS and VARIANTS[arch].num_modules > 0
    groups = (
        1
        + bool(optimizer.get("no_weight_decay_on_norm_and_bias"))
        + (masks and optimizer.get("mask_weight_decay") is not None)
    )
    return f"lr-{OPTIMIZERS[name].__name__}" + ("/pg1" if groups > 1 else "")


@dataclass(frozen=True)
class Logged:
    """What the runs of a config log, as far as the panels go: every panel names only keys that some run logs."""

    validation: bool = False  # val/acc1, val/acc1_best (a validation split)
    tested: bool = False  # test/acc1 (the test split, once, at the end)
    lr: frozenset[str] = frozenset()  # the learning rate's keys (LR monitor)
    masks: bool = False  # the attention_masks images (mask callback logging to W&B, needs the validation split)

    @classmethod
    def of(cls, cfg: DictConfig) -> Logged:
        validation = float(OmegaConf.select(cfg, "data.val_fraction", default=0.0) or 0.0) > 0
        lr: set[str] = set()
        masks = False
        for entry in (cfg.get("callbacks") or {}).values():
            if entry is None or "_target_" not in entry:
                continue
            target = get_class(entry._target_)
            if issubclass(target, LearningRateMonitor):
                lr.add(lr_key(cfg.optimizer, str(OmegaConf.select(cfg, "model.arch"))))
            masks |= issubclass(target, AttentionMaskLogger) and bool(entry.get("log_to_wandb", True)) and validation
        return cls(validation, bool(cfg.get("test", True)), frozenset(lr), masks)

    def __or__(self, other: Logged) -> Logged:
        """What either of two configs logs (the runs of a sweep)."""
        return Logged(
            self.validation or other.validation,
            self.tested or other.tested,
            self.lr | other.lr,
            self.masks or other.masks,
        )

    @property
    def best(self) -> str:
        """The run's result: its best val/acc1, else (no validation split) its test/acc1."""
        return "val/acc1_best" if self.validation else "test/acc1"


@dataclass(frozen=True)
class Sweep:
    """The sweep of ``python train.py -m experiment=<experiment> <overrides>``, as its views need it."""

    experiment: str
    overrides: tuple[str, ...]
    config: DictConfig = field(repr=False)  # the sweep's own config (Hydra's node included)
    swept: dict[str, str]  # override key -> its values, as the sweeper reads them
    fixed: tuple[str, ...]  # the command's other overrides
    group: str

    @classmethod
    def load(cls, experiment: str, overrides: Sequence[str] = (), group: str | None = None) -> Sweep:
        """The sweep, checked: a known experiment, overrides that compose."""
        known = experiments()
        if experiment not in known:
            raise DashboardError(
                f"unknown experiment {experiment!r}; the experiments (conf/experiment/): {', '.join(known)}"
            )
        command = [f"experiment={experiment}", *overrides]
        cfg = _compose(command, RunMode.MULTIRUN)
        parser = OverridesParser.create()
        params = {str(key): str(value) for key, value in (cfg.hydra.sweeper.get("params") or {}).items()}
        fixed = []
        for override in parser.parse_overrides(list(overrides)):
            params.pop(override.get_key_element(), None)
            if override.is_sweep_override():
                params[override.get_key_element()] = str(override.input_line).partition("=")[2]
            else:
                fixed.append(override.input_line)
        swept = {
            key: value for key, value in params.items() if parser.parse_override(f"{key}={value}").is_sweep_override()
        }
        multirun = bool(params) or cfg.hydra.sweeper._target_ != BASIC_SWEEPER  # else run without -m
        found = sweep_group(str(cfg.hydra.sweep.dir) if multirun else None, cfg.task_name)
        return cls(experiment, tuple(overrides), cfg, swept, (f"experiment={experiment}", *fixed), group or found)

    @property
    def task_name(self) -> str:
        return str(self.config.task_name)

    @property
    def search(self) -> bool:
        """An Optuna (or other non-grid) search rather than a grid."""
        return self.config.hydra.sweeper._target_ != BASIC_SWEEPER

    @property
    def objective(self) -> str:
        """What a search maximises or minimises (``optimized_metric``)."""
        return str(self.config.get("optimized_metric") or Logged.of(self.config).best)

    def wandb_key(self, key: str) -> str:
        """The W&B config key that holds the values of the override key ``key``: ``choices.<group>`` for a config
        group, else the key itself (nested config)."""
        key = key.lstrip("+~")
        return f"choices.{key}" if key in config_choices(self.config.hydra) else key

    @property
    def keys(self) -> list[str]:
        """Every swept key, as a W&B config key."""
        return [self.wandb_key(key) for key in self.swept]

    @property
    def row_keys(self) -> list[str]:
        """The swept keys that make a row (all but the seed, which repeats a row): what the views group by."""
        return [self.wandb_key(key) for key in self.swept if key.lstrip("+~") != SEED]

    @cached_property
    def rows(self) -> list[dict[str, str]]:
        """The grid's rows (each combination of the swept values but the seed's, as overrides ``{key: value}``); a
        search has none."""
        if self.search:
            return []
        parser = OverridesParser.create()
        axes = [
            [(key, value) for value in parser.parse_override(f"{key}={values}").sweep_string_iterator()]
            for key, values in self.swept.items()
            if key.lstrip("+~") != SEED
        ]
        return [dict(row) for row in itertools.product(*axes)]

    def job_config(self, row: Mapping[str, str]) -> DictConfig:
        """The config of the jobs of ``row``."""
        return _compose([*self.fixed, *(f"{key}={value}" for key, value in row.items())], RunMode.RUN)

    @cached_property
    def row_configs(self) -> list[DictConfig]:
        """The config of each row's jobs (the sweep's own config for a search)."""
        configs = [self.job_config(row) for row in self.rows] if self.rows else [self.config]
        HydraConfig.instance().set_config(self.config)
        return configs

    @cached_property
    def logged(self) -> Logged:
        """What the sweep's runs log, over all its rows."""
        logged = Logged()
        for cfg in self.row_configs:
            logged |= Logged.of(cfg)
        return logged

    @property
    def jobs(self) -> int:
        """How many runs the sweep makes."""
        if self.search:
            return int(self.config.hydra.sweeper.get("n_trials") or 1)
        parser = OverridesParser.create()
        count = 1
        for key, values in self.swept.items():
            count *= len(list(parser.parse_override(f"{key}={values}").sweep_string_iterator()))
        return count

    def table(self) -> Table | None:
        """The table of analysis/tables.yaml whose runs this sweep trains, if any."""
        return next((table for table in load_tables().values() if table.task_name == self.task_name), None)
