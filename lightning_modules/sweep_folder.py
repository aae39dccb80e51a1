"""Each multirun in a folder of its own: ``logs/<task>/multiruns/<sweep>/<job>/``.

``<sweep>`` is the sweep command's overrides written as a job's name (sorted ``key:value`` joined by ``+``, the keys
that continue a run left out), so rerunning the same sweep finds its folder again (its jobs resume or report) and
another sweep never writes into it; Optuna's ``optimization_results.yaml`` and ``multirun.yaml`` stay with their
sweep. A command that only picks part of a grid that its config declares (``hydra.sweeper.params`` of the basic
sweeper, e.g. ``experiment=cluttered cluttered_row=resnet``) is not another sweep: those overrides are left out of the
name, so its jobs land beside the whole grid's, finished ones report and the grid's own command finds them.
Hydra composes each job's config anew from the job's own overrides, so a folder named in the YAML would name each
job's own folder; this callback names it once from the sweep's config and hands it to every job as a Hydra override
(Hydra passes the sweep's ``hydra.overrides.hydra`` on to its jobs, with every launcher).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from lightning_modules.config_resolvers import run_name

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _values(override: str) -> set[str] | None:
    """The values an override sets or sweeps as strings; None for one that is not a list of values (an interval)."""
    parsed = OverridesParser.create().parse_override(override)
    if not parsed.is_sweep_override():
        return {parsed.get_value_element_as_str()}
    if parsed.is_interval_sweep():
        return None
    return set(parsed.sweep_string_iterator())


def picks_from_grid(override: str, grid: Mapping[str, str]) -> bool:
    """Whether ``override`` only chooses among the values that ``grid`` (key -> sweep string) already sweeps."""
    key = override.split("=", 1)[0]
    if key not in grid:
        return False
    chosen, offered = _values(override), _values(f"{key}={grid[key]}")
    return chosen is not None and offered is not None and chosen <= offered


def sweep_name(overrides: list[str], exclude_keys: list[str], grid: Mapping[str, str] | None = None) -> str:
    """The folder name of a sweep run with ``overrides`` ("default" without any); the overrides that only pick
    values of the config's own ``grid`` are left out (see the module docstring)."""
    excluded = set(exclude_keys)
    kept = [o for o in overrides if "=" in o and not picks_from_grid(o, grid or {})]
    pairs = [o.split("=", 1) for o in kept]
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
        basic = hydra.sweeper.get("_target_") == BASIC_SWEEPER
        grid = {str(k): str(v) for k, v in (hydra.sweeper.get("params") or {}).items()} if basic else {}
        name = sweep_name(list(hydra.overrides.task), list(hydra.job.config.override_dirname.exclude_keys), grid)
        folder = f"{hydra.sweep.dir}/{name}"
        with read_write(hydra.sweep), read_write(hydra.overrides.hydra), open_dict(config):
            hydra.sweep.dir = folder
            hydra.overrides.hydra.append(f"hydra.sweep.dir={_quoted(folder)}")
