"""W&B dashboards as code: every experiment and sweep opens as a ready view (wandb-workspaces, the optional
``dashboards`` extra: W&B's own library for saved workspaces and reports).

    python -m analysis.dashboards EXPERIMENT [OVERRIDE ...] [--entity E] [--project P] [--group G] [--out FILE.json]

EXPERIMENT names a file of conf/experiment/; the OVERRIDEs are those that followed it in the sweep's command,
``python train.py -m experiment=EXPERIMENT OVERRIDE ...`` (``hparams_search=optuna``, ``callbacks=masks``,
``mask=mixed,spatial``). The views are derived from the config that command composes, never from a list kept here, so
a new experiment file needs no edit:

- the swept keys: the sweeper's ``hydra.sweeper.params`` (the experiment's grid, an Optuna search space), then the
  command's own sweeps (a command-line value replaces the file's, as Hydra's sweepers do). A config group
  (``model``) is read from the runs' ``choices.<group>``, any other key from their nested config
  (``data.label_noise``, ``optimizer.lr``): :mod:`lightning_modules.wandb_runs`;
- the group the views select: the sweep folder's name, as the jobs name their group (a config without a sweep is run
  as a single run: its task name), unless ``--group`` names another;
- the panels: only keys that the runs log (:class:`Logged`): ``val/*`` with a validation split, ``lr-<optimizer>``
  with the LR monitor, the ``attention_masks`` images with the mask callback, ``test/acc1`` when the runs test.

The views: a saved workspace per sweep (learning curves grouped by the swept keys, the mean and its standard error
over seeds; parallel coordinates of the swept keys ending in the best val/acc1; test/acc1 per row; the masks); for an
experiment that has a table in analysis/tables.yaml, a report (the paper's number beside each row's mean ± std over
seeds, the claims, the learning curves); for an Optuna search, a workspace of its own (objective per trial, parameter
importance, parallel coordinates of the searched space). ``--out`` writes the views' JSON specification (the library's
own models) with no network access; without it the views are saved to W&B (after ``wandb login``) and their URLs
printed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from hydra.utils import get_class
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, OmegaConf

from analysis.table_specs import Table, load_tables
from analysis.tables import cells_of, keys_needed
from datamodules.configs import compose, options
from lightning_modules.callbacks import AttentionMaskLogger
from lightning_modules.config_resolvers import register_resolvers
from lightning_modules.optim import OPTIMIZERS
from lightning_modules.sweep_folder import SweepFolder
from lightning_modules.wandb_runs import config_choices, sweep_group

INSTALL = "pip install 'wandb-workspaces>=0.4.13' (or, in a checkout: pip install -e '.[dashboards]')"
SEED = "seed"  # the swept key whose runs repeat a row: the views average over it
STEP = "trainer/global_step"  # Lightning's W&B logger logs every metric against it
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


class DashboardError(ValueError):
    """A bad input: the message says what was wrong and what is accepted."""


def experiments() -> list[str]:
    """The experiment files of conf/experiment/, by name."""
    return options("experiment")


def display(group: str) -> str:
    """A group as a view's title: wandb-workspaces refuses ``=`` and ``+`` in a title (its emoji check), so the
    overrides read ``key:value, key:value``."""
    return group.replace("+", ", ").replace("=", ":")


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


def lr_key(optimizer: Mapping[str, Any]) -> str:
    """The name under which Lightning's LearningRateMonitor logs the learning rate (of the first parameter group):
    ``lr-<optimizer class>``, ``/pg1`` added when the optimizer has several groups
    (:func:`lightning_modules.optim.build_optimizer`: one per weight decay)."""
    name = optimizer.get("name", "sgd")
    if name not in OPTIMIZERS:
        raise DashboardError(f"unknown optimizer.name {name!r}; accepted: {sorted(OPTIMIZERS)}")
    groups = (
        1 + bool(optimizer.get("no_weight_decay_on_norm_and_bias")) + (optimizer.get("mask_weight_decay") is not None)
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
                lr.add(lr_key(cfg.optimizer))
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


def _libraries() -> tuple[Any, Any, Any]:
    """``(workspaces, reports, expr)`` of wandb-workspaces, or a :class:`DashboardError` saying how to install it."""
    try:
        import wandb_workspaces.reports.v2 as wr
        import wandb_workspaces.workspaces as ws
        from wandb_workspaces import expr
    except ImportError as err:
        raise DashboardError(
            f"the dashboards need wandb-workspaces, which is not installed ({err}); install it with: {INSTALL}"
        ) from None
    return ws, wr, expr


@dataclass
class View:
    """One saved view: ``kind`` workspace, report or search (an Optuna search's workspace), its title and the
    library's object."""

    kind: str
    title: str
    view: Any

    def spec(self) -> dict[str, Any]:
        """The view as the library sends it to W&B (its own model, as JSON)."""
        return self.view._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


class Builder:
    """The views of a sweep (module docstring), for ``entity``/``project``."""

    def __init__(self, sweep: Sweep, entity: str, project: str) -> None:
        self.sweep, self.entity, self.project = sweep, entity, project
        self.ws, self.wr, self.expr = _libraries()
        self.logged = sweep.logged

    def filters(self) -> list[Any]:
        """The sweep's training runs: its group (and its task, which other sweeps' groups of the same name lack)."""
        return [self.expr.Metric("Group") == self.sweep.group, self.expr.Config("task_name") == self.sweep.task_name]

    def curves(self, *, grouped: bool) -> list[Any]:
        """Learning curves: val/acc1, train/loss and the learning rate against the step; ``grouped``: each row's mean
        and its standard error over seeds."""
        keys = ["val/acc1"] * self.logged.validation + ["train/loss", *sorted(self.logged.lr)]
        spread = {"groupby_aggfunc": "mean", "groupby_rangefunc": "stderr", "aggregate": True} if grouped else {}
        return [self.wr.LinePlot(title=key, x=STEP, y=[key], **spread) for key in keys]

    def parallel(self, keys: Sequence[str], result: str) -> Any:
        """Parallel coordinates over ``keys`` (W&B config keys), ending in ``result``."""
        column = self.wr.ParallelCoordinatesPlotColumn
        return self.wr.ParallelCoordinatesPlot(
            title=f"{', '.join(keys)} -> {result}",
            columns=[
                *(column(metric=self.wr.Config(key), display_name=key) for key in keys),
                column(metric=self.wr.SummaryMetric(result), display_name=result),
            ],
        )

    def per_row(self, metrics: Sequence[str], rangefunc: str) -> Any:
        """A bar per row (the runs grouped by the swept keys): the mean of ``metrics`` and a range over seeds."""
        return self.wr.BarPlot(
            title=f"{', '.join(metrics)} per row (mean ± {'std' if rangefunc == 'stddev' else 'standard error'} over "
            "seeds)",
            metrics=list(metrics),
            groupby_aggfunc="mean",
            groupby_rangefunc=rangefunc,
            aggregate=True,
        )

    def workspace(self) -> View:
        """The sweep's saved workspace: curves by row, the swept keys against the result, test/acc1 per row, masks."""
        ws, wr = self.ws, self.wr
        results = [self.parallel(self.sweep.keys, self.logged.best)] if self.sweep.keys else []
        results += [self.per_row(["test/acc1"], "stddev")] * self.logged.tested
        sections = [
            ws.Section(
                name="Learning curves (mean ± standard error over seeds)",
                panels=self.curves(grouped=True),
                is_open=True,
            ),
            ws.Section(name="Results", panels=results, is_open=True),
        ]
        if self.logged.masks:
            masks = wr.MediaBrowser(title="attention masks", media_keys=["attention_masks"], gallery_axis="step")
            sections.append(ws.Section(name="Attention masks", panels=[masks], is_open=True))
        title = f"{self.sweep.experiment} - sweep {display(self.sweep.group)}"
        return View("workspace", title, self._workspace(title, sections, self.sweep.row_keys))

    def search(self) -> View:
        """An Optuna search's workspace: the objective per trial, parameter importance, the searched space."""
        ws, wr = self.ws, self.wr
        objective = self.sweep.objective
        panels = [
            wr.BarPlot(title=f"{objective} per trial", metrics=[objective], max_runs_to_show=self.sweep.jobs),
            wr.ParameterImportancePlot(with_respect_to=objective),
            self.parallel(self.sweep.keys, objective),
        ]
        sections = [
            ws.Section(name="Search", panels=panels, is_open=True),
            ws.Section(name="Learning curves (one line per trial)", panels=self.curves(grouped=False), is_open=True),
        ]
        title = f"{self.sweep.experiment} - search {display(self.sweep.group)}"
        return View("search", title, self._workspace(title, sections, []))

    def _workspace(self, title: str, sections: list[Any], groupby: Sequence[str]) -> Any:
        ws = self.ws
        return ws.Workspace(
            entity=self.entity,
            project=self.project,
            name=title,
            sections=sections,
            settings=ws.WorkspaceSettings(x_axis=STEP, max_runs=max(10, self.sweep.jobs)),
            runset_settings=ws.RunsetSettings(
                filters=self.filters(),
                groupby=[self.expr.Config(key) for key in groupby],
                pinned_columns=[f"summary:{key}" for key in ("test/acc1",) * self.logged.tested],
            ),
        )

    def runset(self) -> Any:
        """The sweep's runs in a report, grouped by row."""
        return self.wr.Runset(
            name=self.sweep.group, filters=self.filters(), groupby=[f"config.{key}" for key in self.sweep.row_keys]
        )

    def report(self, table: Table) -> View:
        """The report of a paper table: each row's mean ± std over seeds beside the paper's number, the claims, the
        learning curves."""
        wr = self.wr
        metrics = sorted({column.metric for column in table.columns}) if self.logged.tested else []
        rows = wr.PanelGrid(
            runsets=[self.runset()],
            panels=[
                *([self.per_row(metrics, "stddev")] if metrics else []),
                wr.MarkdownPanel(markdown=paper_table(self.sweep, table)),
            ],
        )
        blocks = [
            wr.H1(text="Each row beside the paper"),
            wr.P(
                text=f"The runs of the sweep {self.sweep.group} (experiment {self.sweep.experiment}) grouped by "
                f"{', '.join(self.sweep.row_keys) or 'nothing (one row)'}: each bar is a row's mean over seeds with "
                "its standard deviation; beside it, the paper's number for that row (analysis/tables.yaml, the "
                "numbers RESULTS.md uses)."
            ),
            rows,
            wr.H1(text="Claims"),
            wr.MarkdownBlock(text=claims_markdown(table)),
            wr.H1(text="Learning curves (mean ± standard error over seeds)"),
            wr.PanelGrid(runsets=[self.runset()], panels=self.curves(grouped=True)),
        ]
        title = f"{table.title} ({self.sweep.group})"[:128]
        report = wr.Report(
            entity=self.entity,
            project=self.project,
            title=title,
            description=f"python train.py -m {' '.join(self.sweep.fixed[:1] + self.sweep.overrides)}",
            blocks=blocks,
        )
        return View("report", title, report)

    def views(self) -> list[View]:
        """Every view of the sweep."""
        if self.sweep.search:
            return [self.search()]
        table = self.sweep.table()
        return [self.workspace(), *([self.report(table)] if table is not None else [])]


def paper_table(sweep: Sweep, table: Table) -> str:
    """Markdown: each row of the sweep (its swept values), the cell of the paper's table it fills and the paper's
    number there, also as the accuracy that the bars show."""
    lines = [
        f"**{table.title}**",
        "",
        "| row | paper's cell | paper | paper as accuracy | ours (W&B key) |",
        "|---|---|---|---|---|",
    ]
    unit = " % error" if table.value == "error" else " %"
    for row, cfg in zip(sweep.rows or [{}], sweep.row_configs, strict=True):
        values = {key: OmegaConf.select(cfg, key, default=None) for key in keys_needed(table)}
        label = ", ".join(f"{key}={value}" for key, value in row.items()) or " ".join(sweep.fixed)
        cells = cells_of(table, values)
        if not cells:
            lines.append(f"| {label} | not in the paper's table | — | — | — |")
        for i, j in cells:
            paper, column, size = table.rows[i].paper[j], table.columns[j], table.rows[i].test_size
            shown = accuracy = "—"
            if paper is not None:
                shown = f"{paper.value:g}{unit}" + ("" if paper.tag == "paper" else f" ({paper.tag})")
                accuracy = f"{1 - paper.value / 100 if table.value == 'error' else paper.value / 100:.4f}"
            where = f"{table.rows[i].label}, {column.label}"
            if size is not None and size != OmegaConf.select(cfg, "data.image_size", default=None):
                where += f" (the paper tests at {size} px: eval.py test_sizes=[{size}])"
            lines.append(f"| {label} | {where} | {shown} | {accuracy} | {column.metric} |")
    return "\n".join(lines)


def claims_markdown(table: Table) -> str:
    """The table's claims (analysis/tables.yaml ``comparisons``) and how they are tested."""
    test = f"`python -m analysis.results {table.name}`"
    if not table.comparisons:
        return (
            f"analysis/tables.yaml states no claim test for {table.name}; {test} prints the table beside the paper's "
            "numbers."
        )
    lines = [
        f"{test} tests each claim on the same test images (both rows' best checkpoints, analysis/paired.py):",
        "",
    ]
    lines += [f"- **{c.claim}**: {c.first} vs {c.second}. Paper: {c.paper}." for c in table.comparisons]
    return "\n".join(lines)


def named_keys(spec: Any) -> dict[str, set[str]]:
    """The logged keys that a view's JSON specification names, by where W&B looks them up: ``metrics`` (history
    and summary), ``media`` (images), ``config`` (nested config, dotted) and ``run`` (run attributes: group, ...).
    Used to check the views against what runs log."""
    found: dict[str, set[str]] = {"metrics": set(), "media": set(), "config": set(), "run": set()}

    def add_accessor(accessor: str) -> None:
        section, _, name = accessor.partition(":")
        if section == "config":
            found["config"].add(".".join(part for part in name.split(".") if part != "value"))
        elif section == "summary":
            found["metrics"].add(name)
        else:
            found["run"].add(name)

    for node in _dicts(spec):
        config = node.get("config") if isinstance(node.get("config"), dict) else {}
        for key in ("metrics",):
            found["metrics"].update(config.get(key) or [])
        for key in ("xAxis", "targetKey"):
            if isinstance(config.get(key), str):
                found["metrics"].add(config[key])
        found["media"].update(config.get("mediaKeys") or [])
        for column in config.get("columns") or []:
            add_accessor(column["accessor"])
        if set(node) >= {"section", "name"} and isinstance(node.get("name"), str) and "op" not in node:
            add_accessor(f"{node['section']}:{node['name']}")
    return found


def _dicts(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _dicts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _dicts(value)


def logged_in_api() -> Any:
    """W&B's API object, or a :class:`DashboardError` saying how to log in (and that ``--out`` needs no login)."""
    import wandb

    try:
        return wandb.Api()
    except wandb.errors.UsageError as err:
        raise DashboardError(
            f"not logged in to W&B ({err}): run `wandb login` (or set WANDB_API_KEY), then rerun this command; "
            "or write the views' JSON specification offline with --out FILE.json"
        ) from None


def save(views: Sequence[View]) -> list[str]:
    """Save the views to W&B and return their URLs. A report's run sets are given its entity and project here (the
    library looks the project up then)."""
    urls = []
    for view in views:
        if view.kind == "report":
            for block in view.view.blocks:
                for runset in getattr(block, "runsets", []):
                    runset.entity, runset.project = view.view.entity, view.view.project
        view.view.save()
        urls.append(view.view.url)
    return urls


def document(sweep: Sweep, views: Sequence[View], entity: str, project: str) -> dict[str, Any]:
    """What ``--out`` writes: the sweep and each view's specification."""
    return {
        "experiment": sweep.experiment,
        "overrides": list(sweep.overrides),
        "task_name": sweep.task_name,
        "group": sweep.group,
        "swept": {key: sweep.wandb_key(key) for key in sweep.swept},
        "entity": entity,
        "project": project,
        "views": [{"kind": view.kind, "title": view.title, "spec": view.spec()} for view in views],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build an experiment's views; write them (``--out``) or save them to W&B."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.dashboards",
        description="W&B views of an experiment's sweep, as code: a saved workspace, a report per paper table, an "
        "Optuna search's view.",
    )
    parser.add_argument("experiment", help=f"a file of conf/experiment/ ({', '.join(experiments())})")
    parser.add_argument(
        "overrides", nargs="*", help="the overrides that followed experiment= in the sweep's train.py -m command"
    )
    parser.add_argument("--entity", help="W&B entity (default: your default entity)")
    parser.add_argument("--project", help="W&B project (default: the logger's, conf/logger/wandb.yaml)")
    parser.add_argument("--group", help="the W&B group to select (default: the sweep's, as its jobs name it)")
    parser.add_argument("--out", help="write the views' JSON specification to this file instead of saving them")
    args = parser.parse_args(argv)
    try:
        sweep = Sweep.load(args.experiment, args.overrides, args.group)
        project = args.project or str(OmegaConf.select(sweep.config, "logger.wandb.project", default="resattn"))
        if args.out:
            entity = args.entity or ""
            views = Builder(sweep, entity, project).views()
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(document(sweep, views, entity, project), indent=1) + "\n")
            titles = ", ".join(view.title for view in views)
            print(f"{len(views)} view{'s' * (len(views) > 1)} of group {sweep.group} ({titles}) written to {out}")
            return 0
        _libraries()
        entity = args.entity or logged_in_api().default_entity
        views = Builder(sweep, entity, project).views()
        for view, url in zip(views, save(views), strict=True):
            print(f"{view.kind}: {view.title}\n  {url}")
    except DashboardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
