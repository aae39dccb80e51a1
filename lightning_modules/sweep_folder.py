"""Each multirun in a folder of its own: ``logs/<task>/multiruns/<sweep>/<job>/``.

``<sweep>`` is the sweep command's overrides written as a job's name (sorted ``key:value`` joined by ``+``, the keys
that continue a run left out), so rerunning the same sweep finds its folder again (its jobs resume or report) and
another sweep never writes into it; Optuna's ``optimization_results.yaml`` and ``multirun.yaml`` stay with their
sweep. Hydra composes each job's config anew from the job's own overrides, so a folder named in the YAML would name
each job's own folder; this callback names it once from the sweep's config and hands it to every job as a Hydra
override (Hydra passes the sweep's ``hydra.overrides.hydra`` on to its jobs, with every launcher).
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from lightning_modules.config_resolvers import run_name


def sweep_name(overrides: list[str], exclude_keys: list[str]) -> str:
    """The folder name of a sweep run with ``overrides`` ("default" without any)."""
    excluded = set(exclude_keys)
    pairs = [o.split("=", 1) for o in overrides if "=" in o]
    items = sorted((key, value) for key, value in pairs if key.lstrip("~+") not in excluded)
    return run_name("+".join(f"{key}:{value}" for key, value in items))


def _quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class SweepFolder(Callback):
    """Appends the sweep's name to ``hydra.sweep.dir`` before the sweep starts (see the module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = config.hydra
        if any(o.startswith("hydra.sweep.dir=") for o in hydra.overrides.hydra):
            return  # the user chose the folder
        name = sweep_name(list(hydra.overrides.task), list(hydra.job.config.override_dirname.exclude_keys))
        folder = f"{hydra.sweep.dir}/{name}"
        with read_write(hydra.sweep), read_write(hydra.overrides.hydra), open_dict(config):
            hydra.sweep.dir = folder
            hydra.overrides.hydra.append(f"hydra.sweep.dir={_quoted(folder)}")
