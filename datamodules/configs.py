"""The one way code outside ``train.py`` / ``eval.py`` reads the configs: ``conf/train.yaml`` (or ``eval.yaml``)
composed by Hydra with command-line overrides, exactly as the entry points compose it, never a group file read as
plain YAML (a group file alone misses its defaults list: ``conf/_bases/data.yaml``, ``conf/trainer/gpu.yaml``'s
``cpu``).

It lives in ``datamodules``, the lowest package that needs it (``python -m datamodules.shards`` composes a data
config); ``lightning_modules``, ``analysis`` and ``benchmarks`` import it from here (docs/design.md §1). The
resolvers (``${fast_precision:...}``, ``${run_name:...}``) are registered by the callers that resolve them
(``lightning_modules.config_resolvers.register_resolvers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose(
    overrides: Sequence[str] = (), *, config_name: str = "train", multirun: bool = False, hydra_config: bool = False
) -> DictConfig:
    """``conf/<config_name>.yaml`` composed with ``overrides`` as ``python train.py [-m] <overrides>`` composes it.

    ``multirun``: the sweep's own config (``train.py -m``: sweeps and the experiment's grid left to the sweeper);
    ``hydra_config``: keep Hydra's node (``hydra.runtime.choices``, the run and sweep folders)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None  # set by initialize_config_dir
        cfg = hydra.compose_config(
            config_name, list(overrides), run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN, from_shell=False
        )
    if not hydra_config:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def options(group: str) -> list[str]:
    """The choices of config group ``group``: ``conf/<group>/*.yaml`` (their bases are in ``conf/_bases``)."""
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))
