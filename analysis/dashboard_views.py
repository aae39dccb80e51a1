"""The views of a sweep as wandb-workspaces objects (imported when a view is built: the optional ``dashboards``
extra): a saved workspace, a report per paper table, an Optuna search's workspace (:mod:`analysis.dashboards`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from analysis.dashboard_sweeps import DashboardError, Sweep
from analysis.table_specs import Table
from analysis.tables import cells_of, keys_needed

INSTALL = "pip install 'wandb-workspaces>=0.4.13' (or, in a checkout: pip install -e '.[dashboards]')"
STEP = "trainer/global_step"  # Lightning's W&B logger logs every metric against it


def display(group: str) -> str:
    """A group as a view's title: wandb-workspaces refuses ``=`` and ``+`` in a title (its emoji check), so the
    overrides read ``key:value, key:value``."""
    return group.replace("+", ", ").replace("=", ":")


def libraries() -> tuple[Any, Any, Any]:
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
        self.ws, self.wr, self.expr = libraries()
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

    def mask_panels(self) -> list[Any]:
        """The mask grids, and the masks' amplitude per module against the step, each row's mean over seeds: the
        logits' spread (how far training lets a mask move the trunk; a line sinking to 0 is a mask turning into a
        constant 0.5) and the 5th-95th percentile range of M. Whether the network uses its masks is measured offline
        (``python -m analysis.mask_measures``)."""
        wr = self.wr
        amplitude = [
            wr.LinePlot(
                title=f"{title} per module (stage<S>_module<M>)",
                x=STEP,
                metric_regex=f"^mask/{key}/stage",
                groupby_aggfunc="mean",
                aggregate=True,
            )
            for key, title in (("logit_std", "mask logit std"), ("range", "mask range, 5th-95th percentile of M"))
        ]
        grids = wr.MediaBrowser(title="attention masks", media_keys=["attention_masks"], gallery_axis="step")
        return [*amplitude, grids]

    def workspace(self) -> View:
        """The sweep's saved workspace: curves by row, the swept keys against the result, test/acc1 per row, masks."""
        ws = self.ws
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
            sections.append(ws.Section(name="Attention masks", panels=self.mask_panels(), is_open=True))
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
    and summary), ``media`` (images), ``config`` (nested config, dotted) and ``run`` (run attributes: group, ...),
    and the ``patterns`` (regular expressions) that select metrics. Used to check the views against what runs log."""
    found: dict[str, set[str]] = {"metrics": set(), "media": set(), "config": set(), "run": set(), "patterns": set()}

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
        if isinstance(config.get("metricRegex"), str):
            found["patterns"].add(config["metricRegex"])
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
