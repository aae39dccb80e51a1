"""Collect the finished runs of a paper table and print it in the paper's layout, beside the paper's numbers.

    python -m lightning_modules.results table3 [--logs logs] [--output results/table3.md]

Runs are the directories ``train.py`` writes (``conf/experiment/table*.yaml`` put a table's jobs under
``logs/<table>/multiruns/<overrides>/``). A run is recognised by its saved config, ``.hydra/config.yaml`` (read
with OmegaConf; no Hydra needed) or, without one, its offline W&B log ``wandb/offline-run-*/run-*.wandb``; its
``task_name`` must be the table's. Its test accuracy is the last ``test/acc1``/``test/acc5`` of its CSV logs
(``csv/metrics.csv`` or ``csv/version_<n>/metrics.csv``, newest last), else of the newest W&B run's summary.
Other test sizes (Table 7) come from the ``eval_results.json`` files that ``eval.py`` wrote for one of the run's
checkpoints. Runs are grouped by the table's row and column keys (e.g. ``model.name`` x
``model.net.attention_residual``); a cell shows the error ``100 * (1 - acc)`` as mean ± sample std over its runs
(seeds), the run count, and the paper's number (PAPER.md §6) with its source tag, ``(unverified)`` included.
Settings that differ from the paper's recipe (PAPER.md §5) are listed under the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from lightning_modules.wandb_offline import DamagedLogError, OfflineRun, read_offline_run

EXPERIMENT_DIR = Path(__file__).resolve().parents[1] / "conf" / "experiment"


@dataclass(frozen=True)
class PaperValue:
    """A number from PAPER.md §6 and its source tag (paper, unverified, derived, README)."""

    value: float
    tag: str = "paper"

    def __str__(self) -> str:
        return f"{self.value:g}" + ("" if self.tag == "paper" else f" ({self.tag})")


def _p(value: float) -> PaperValue:
    return PaperValue(value)


def _u(value: float) -> PaperValue:
    return PaperValue(value, "unverified")


def _d(value: float) -> PaperValue:
    return PaperValue(value, "derived")


def _r(value: float) -> PaperValue:
    return PaperValue(value, "README")


@dataclass(frozen=True)
class Column:
    """A column of a table: the runs it holds (``match``) and the accuracy it reports."""

    label: str
    match: Mapping[str, Any] = field(default_factory=dict)
    metric: str = "test/acc1"


@dataclass(frozen=True)
class Row:
    """A row: the runs it holds (``match``; empty for a paper-only baseline) and the paper's value per column."""

    label: str
    match: Mapping[str, Any]
    paper: tuple[PaperValue | None, ...]
    paper_params_m: PaperValue | None = None
    test_size: int | None = None  # Table 7: the input size the paper tests this network at


@dataclass(frozen=True)
class Table:
    """A paper table (PAPER.md §6): layout, paper numbers and the recipe its runs should follow (PAPER.md §5)."""

    name: str
    title: str
    row_header: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    recipe: Mapping[str, Any]
    params: bool = False


CIFAR_RECIPE: dict[str, Any] = {
    "optimizer.name": "sgd",
    "optimizer.lr": 0.1,
    "optimizer.momentum": 0.9,
    "optimizer.nesterov": True,
    "optimizer.weight_decay": 1e-4,
    "data.batch_size": 64,
    "scheduler.name": "multistep",
    "scheduler.milestones": [64000, 96000],
    "scheduler.gamma": 0.1,
    "trainer.max_steps": 160000,
}
CIFAR10 = {"data._target_": "datamodules.CIFAR10DataModule"}
ATT56 = {"model.name": "att56"}
ERR = Column("top-1 error")

# The paper's numbers (PAPER.md §6), one entry per table, with their source tags.
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "table1",
            "Table 1: mask activation, Attention-56, CIFAR-10 top-1 error (%)",
            "activation",
            (ERR,),
            (
                Row("f1 mixed", {"model.net.mask_type": "mixed"}, (_u(5.52),)),
                Row("f2 channel", {"model.net.mask_type": "channel"}, (_u(6.24),)),
                Row("f3 spatial", {"model.net.mask_type": "spatial"}, (_u(6.33),)),
            ),
            {**CIFAR_RECIPE, **CIFAR10, **ATT56, "model.net.mask_structure": "hourglass", "model.net.attention_residual": True},
        ),
        Table(
            "table3",
            "Table 3: attention residual learning (ARL) vs naive attention learning (NAL), CIFAR-10 top-1 error (%)",
            "network",
            (Column("ARL", {"model.net.attention_residual": True}), Column("NAL", {"model.net.attention_residual": False})),
            (
                Row("Attention-56", {"model.name": "att56"}, (_u(5.52), _u(5.89))),
                Row("Attention-92", {"model.name": "att92"}, (_p(4.99), _u(5.35))),
                Row("Attention-128", {"model.name": "att128"}, (_u(4.44), _u(5.57))),
                Row("Attention-164", {"model.name": "att164"}, (_u(4.31), _u(7.18))),
            ),
            {**CIFAR_RECIPE, **CIFAR10, "model.net.mask_type": "mixed", "model.net.mask_structure": "hourglass"},
        ),
        Table(
            "table4",
            "Table 4: soft-mask structure, Attention-56, CIFAR-10 top-1 error (%)",
            "mask",
            (ERR,),
            (
                Row("local convolutions", {"model.net.mask_structure": "local"}, (_u(6.48),)),
                Row("encoder-decoder", {"model.net.mask_structure": "hourglass"}, (_u(5.52),)),
            ),
            {**CIFAR_RECIPE, **CIFAR10, **ATT56, "model.net.mask_type": "mixed", "model.net.attention_residual": True},
        ),
        Table(
            "table5",
            "Table 5: label noise (noise level 1 - r), CIFAR-10 test error (%)",
            "noise level",
            (Column("ResNet-164", {"model.name": "resnet164"}), Column("Attention-92", {"model.name": "att92"})),
            (
                Row("10%", {"data.label_noise": 0.1}, (_u(5.93), _u(5.15))),
                Row("30%", {"data.label_noise": 0.3}, (_u(6.61), _u(5.79))),
                Row("50%", {"data.label_noise": 0.5}, (_u(8.35), _u(7.27))),
                Row("70%", {"data.label_noise": 0.7}, (_p(17.21), _p(15.75))),
            ),
            {**CIFAR_RECIPE, **CIFAR10, "model.net.mask_type": "mixed", "model.net.attention_residual": True},
        ),
        Table(
            "table6",
            "Table 6: CIFAR-10/100 test error (%)",
            "network",
            (Column("CIFAR-10", {"data.num_classes": 10}), Column("CIFAR-100", {"data.num_classes": 100})),
            (
                Row("ResNet-164", {"model.name": "resnet164"}, (_u(5.46), _u(24.33)), _p(1.7)),
                Row("ResNet-1001", {"model.name": "resnet1001"}, (_p(4.64), _p(22.71)), _p(10.3)),
                Row("WRN-16-8", {}, (_u(4.81), _u(22.07)), _u(11.0)),
                Row("WRN-28-10", {}, (_p(4.17), _p(20.50)), _p(36.5)),
                Row("Attention-92", {"model.name": "att92"}, (_p(4.99), _p(21.71)), _p(1.9)),
                Row("Attention-236", {"model.name": "att236"}, (_p(4.14), _p(21.16)), _p(5.1)),
                Row("Attention-452†", {"model.name": "att452"}, (_p(3.90), _p(20.45)), _p(8.6)),
            ),
            {**CIFAR_RECIPE, "model.net.mask_type": "mixed", "model.net.attention_residual": True},
            params=True,
        ),
        Table(
            "table7",
            "Table 7: ImageNet single-crop validation error (%)",
            "network",
            (Column("top-1"), Column("top-5", metric="test/acc5")),
            (
                Row("ResNet-152", {}, (_d(22.16), _d(6.16)), _u(60.2), 224),
                Row("Attention-56", ATT56, (_r(21.76), _r(5.9)), _p(31.9), 224),
                Row("ResNeXt-101", {}, (_u(21.2), _u(5.6)), _u(44.5), 224),
                Row("AttentionNeXt-56", {"model.name": "attnext56"}, (_r(21.2), _r(5.6)), _u(31.9), 224),
                Row("Inception-ResNet-v1", {}, (_u(21.3), _u(5.5)), None, 299),
                Row("AttentionInception-56", {"model.name": "attincep56"}, (_u(20.36), _u(5.29)), _u(31.9), 299),
                Row("ResNet-200", {}, (_d(20.1), _u(4.8)), _u(64.7), 320),
                Row("Inception-ResNet-v2", {}, (_u(19.9), _u(4.9)), None, 299),
                Row("Attention-92", {"model.name": "att92"}, (_r(19.5), _p(4.8)), _p(51.3), 320),
            ),
            {
                "data._target_": "datamodules.ImageNetDataModule",
                "optimizer.name": "sgd",
                "optimizer.lr": 0.1,
                "optimizer.momentum": 0.9,
                "scheduler.milestones": [200000, 400000, 500000],
                "scheduler.gamma": 0.1,
                "trainer.max_steps": 530000,
                "model.net.mask_type": "mixed",
                "model.net.attention_residual": True,
            },
            params=True,
        ),
    )
}
TAG_NOTE = (
    "Paper numbers: PAPER.md §6; untagged = stated in the paper, (unverified) = recalled from the paper, check "
    "before relying on it, (derived) = arithmetic on paper numbers, (README) = the authors' README. "
    "'—' = a paper-only baseline, not trained here."
)


def get_table(name: str) -> Table:
    """The table called ``name``; an unknown name lists the known ones."""
    if name not in TABLES:
        raise ValueError(
            f"unknown table {name!r}; known tables: {', '.join(TABLES)} "
            "(Table 2, the architectures, is printed by `python -m resattn.summary`)"
        )
    return TABLES[name]


def multirun_command(table: str) -> str | None:
    """The table's multirun command, read from the comment of ``conf/experiment/<table>.yaml``."""
    path = EXPERIMENT_DIR / f"{table}.yaml"
    if not path.is_file():
        return None
    found = re.search(r"^#\s*(python train\.py -m .+)$", path.read_text(), flags=re.MULTILINE)
    return found.group(1).strip() if found else None


# ---- reading runs ----------------------------------------------------------------------------------------------
@dataclass
class Run:
    """One training run: its directory, the config values the tables need, its metrics, its parameter count."""

    path: Path
    values: dict[str, Any]
    metrics: dict[str, float]
    params: float | None = None


def _keys_needed(table: Table) -> set[str]:
    keys = {"task_name", "seed", "data.image_size", *table.recipe}
    for part in (*table.rows, *table.columns):
        keys |= set(part.match)
    return keys


def _hydra_values(path: Path, keys: set[str]) -> dict[str, Any]:
    """Values of ``keys`` in a saved ``.hydra/config.yaml``; interpolations that need Hydra itself stay None."""
    cfg = OmegaConf.load(path)
    assert isinstance(cfg, DictConfig)
    values = {}
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        values[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return values


def _newest_wandb_run(run: Path) -> OfflineRun | None:
    """The newest finished offline W&B log of ``run`` (a resumed run has one per restart), else the newest
    readable unfinished one, else None. Damaged logs (and logs still being written) are passed over."""
    readable = []
    for folder in sorted(run.glob("wandb/offline-run-*"), reverse=True):
        try:
            found = read_offline_run(folder)
        except (FileNotFoundError, DamagedLogError):
            continue
        if found.finished:
            return found
        readable.append(found)
    return readable[0] if readable else None


def _csv_metrics(path: Path) -> dict[str, float]:
    """The last non-empty value of every column of a Lightning CSV log."""
    metrics: dict[str, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and value not in (None, ""):
                    metrics[key] = float(value)
    return metrics


def _csv_folders(run: Path) -> list[Path]:
    """The CSV logger's folders of ``run``, oldest first: ``csv/`` or ``csv/version_<n>/`` (one per resume)."""
    versions = [p for p in run.glob("csv/version_*") if p.name.removeprefix("version_").isdigit()]
    return [run / "csv", *sorted(versions, key=lambda p: int(p.name.removeprefix("version_")))]


def _csv_params(folders: Sequence[Path]) -> float | None:
    """Parameter count the CSV logger saved with the hyper-parameters (``model/params_total``)."""
    value = None
    for hparams in (folder / "hparams.yaml" for folder in folders):
        if hparams.is_file():
            value = (yaml.safe_load(hparams.read_text()) or {}).get("model/params_total", value)
    return None if value is None else float(value)


def load_run(run: Path, keys: set[str]) -> Run:
    """Read one run directory: config values (Hydra, else W&B), test metrics (CSV, else W&B), parameter count.
    The W&B log is only parsed when the Hydra config or the CSV test metrics are missing."""
    hydra_config = run / ".hydra" / "config.yaml"
    values = _hydra_values(hydra_config, keys) if hydra_config.is_file() else {}
    folders = _csv_folders(run)
    metrics: dict[str, float] = {}
    for path in (folder / "metrics.csv" for folder in folders):
        if path.is_file():
            metrics.update(_csv_metrics(path))
    params = _csv_params(folders)
    wandb_run = _newest_wandb_run(run) if not values or "test/acc1" not in metrics else None
    if wandb_run is not None:
        for key in keys:
            if values.get(key) is None and key in wandb_run.config:
                values[key] = wandb_run.config[key]
        for key, value in wandb_run.summary.items():
            if isinstance(value, (int, float)) and key not in metrics:
                metrics[key] = float(value)
        if "step" not in metrics and "trainer/global_step" in metrics:
            metrics["step"] = metrics["trainer/global_step"]
        if params is None and wandb_run.config.get("model/params_total") is not None:
            params = float(wandb_run.config["model/params_total"])
    size = values.get("data.image_size")
    for name in ("test/acc1", "test/acc5"):
        if name in metrics and size is not None:
            metrics[f"{name}@{size}"] = metrics[name]
    return Run(run, values, metrics, params)


def find_run_dirs(logs: Path, task_name: str) -> tuple[Path, list[Path]]:
    """``(where it looked, run directories)``: directories under ``logs/<task_name>`` (or ``logs`` itself when that
    does not exist) holding a ``.hydra/config.yaml`` or a W&B offline ``run-*.wandb`` log."""
    base = logs / task_name if (logs / task_name).is_dir() else logs
    dirs = {p.parent.parent for p in base.rglob(".hydra/config.yaml")}
    dirs |= {p.parents[2] for p in base.rglob("wandb/offline-run-*/run-*.wandb")}
    return base, sorted(dirs)


def _attach_eval_results(runs: Sequence[Run], logs: Path) -> None:
    """Add ``test/acc{1,5}@<size>`` from every ``eval_results.json`` (eval.py) made from a run's checkpoint."""
    by_dir = {run.path.resolve(): run for run in runs}
    files = set(logs.rglob("eval_results.json"))
    for run in runs:
        files |= set(run.path.rglob("eval_results.json"))
    for path in sorted(files):
        results = json.loads(path.read_text())
        candidates = [path]
        if results.get("checkpoint"):  # absolute, or relative to where eval.py ran (cwd or next to logs/)
            candidates += [Path.cwd() / results["checkpoint"], logs.parent / results["checkpoint"]]
        owner = next((by_dir[p] for c in candidates for p in c.resolve().parents if p in by_dir), None)
        if owner is None:
            continue
        for size, metrics in results.get("sizes", {}).items():
            for name in ("test/acc1", "test/acc5"):
                if name in metrics:
                    owner.metrics[f"{name}@{size}"] = float(metrics[name])


def collect_runs(table: Table, logs: Path) -> tuple[Path, list[Run]]:
    """Every run of ``table`` under ``logs`` (finished or not); raises with where it looked when there is none."""
    if not logs.is_dir():
        raise FileNotFoundError(f"logs directory {logs} does not exist (give the one train.py wrote to with --logs)")
    base, dirs = find_run_dirs(logs, table.name)
    keys = _keys_needed(table)
    runs = [run for run in (load_run(d, keys) for d in dirs) if run.values.get("task_name") == table.name]
    if not runs:
        command = multirun_command(table.name) or f"python train.py -m experiment={table.name} ..."
        raise FileNotFoundError(
            f"no runs of {table.name} found under {base}: looked for */.hydra/config.yaml and "
            f"*/wandb/offline-run-*/run-*.wandb with task_name={table.name}. Run the table first: {command}"
        )
    _attach_eval_results(runs, logs)
    return base, runs


# ---- building the table ----------------------------------------------------------------------------------------
def _same(found: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or isinstance(found, bool):
        return isinstance(found, bool) and isinstance(expected, bool) and found == expected
    if isinstance(expected, float) and isinstance(found, (int, float)):
        return math.isclose(found, expected, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, list) and isinstance(found, (list, tuple)):
        return len(found) == len(expected) and all(_same(f, e) for f, e in zip(found, expected, strict=True))
    return found == expected


def _matches(values: Mapping[str, Any], match: Mapping[str, Any]) -> bool:
    return all(_same(values.get(key), value) for key, value in match.items())


def _metric_key(column: Column, row: Row) -> str:
    return column.metric if row.test_size is None else f"{column.metric}@{row.test_size}"


@dataclass
class Cell:
    """The errors (%) of the runs in one cell."""

    errors: list[float]

    def __str__(self) -> str:
        if not self.errors:
            return "missing"
        mean = statistics.fmean(self.errors)
        n = len(self.errors)
        if n == 1:
            return f"{mean:.2f} (n=1)"
        return f"{mean:.2f} ± {statistics.stdev(self.errors):.2f} (n={n})"


def cells_of(table: Table, values: Mapping[str, Any]) -> list[tuple[int, int]]:
    """The ``(row, column)`` cells a run with config ``values`` fills (columns may differ by metric only, e.g.
    top-1/top-5); empty when the run is outside the table."""
    return [
        (i, j)
        for i, row in enumerate(table.rows)
        for j, column in enumerate(table.columns)
        if row.match and _matches(values, row.match) and _matches(values, column.match)
    ]


def _finished(table: Table, run: Run) -> bool:
    return any(_metric_key(table.columns[j], table.rows[i]) in run.metrics for i, j in cells_of(table, run.values))


def build_cells(table: Table, runs: Sequence[Run]) -> dict[tuple[int, int], Cell]:
    """``{(row, column): Cell}`` for the rows that we train; error = 100 * (1 - accuracy)."""
    cells = {(i, j): Cell([]) for i, row in enumerate(table.rows) if row.match for j in range(len(table.columns))}
    for run in runs:
        for i, j in cells_of(table, run.values):
            key = _metric_key(table.columns[j], table.rows[i])
            if key in run.metrics:
                cells[i, j].errors.append(100.0 * (1.0 - run.metrics[key]))
    return cells


def recipe_deviations(table: Table, runs: Sequence[Run]) -> list[str]:
    """One line per recipe key on which some runs differ from the paper (PAPER.md §5), with the run counts, and
    one for runs that stopped before the paper's number of iterations."""
    lines = []
    steps = table.recipe.get("trainer.max_steps")
    short = [int(r.metrics["step"]) for r in runs if "step" in r.metrics and r.metrics["step"] < steps]
    if short:
        span = str(min(short)) if min(short) == max(short) else f"{min(short)}-{max(short)}"
        lines.append(f"steps trained: {span} in {len(short)} run(s) (paper: {steps})")
    for key, expected in table.recipe.items():
        counts: dict[str, int] = {}
        for run in runs:
            found = run.values.get(key)
            if not _same(found, expected):
                counts[repr(found)] = counts.get(repr(found), 0) + 1
        if counts:
            found_text = ", ".join(f"{value} in {n} run(s)" for value, n in sorted(counts.items()))
            lines.append(f"`{key}`: {found_text} (paper: {expected!r})")
    return lines


def _params_text(row: Row, runs: Sequence[Run]) -> str:
    paper = str(row.paper_params_m) if row.paper_params_m is not None else "—"
    if not row.match:
        return f"— / {paper}"
    found = sorted({run.params for run in runs if run.params is not None and _matches(run.values, row.match)})
    ours = "/".join(f"{p / 1e6:.2f}" for p in found) if found else "?"
    return f"{ours} / {paper}"


def render(table: Table, runs: Sequence[Run], where: Path) -> str:
    """The table as markdown: ours (mean ± std, n) beside the paper's numbers, then notes on the runs."""
    cells = build_cells(table, runs)
    header = [table.row_header]
    if table.rows[0].test_size is not None:
        header.append("test size")
    if table.params:
        header.append("params M (ours / paper)")
    for column in table.columns:
        header += [f"{column.label} ours", f"{column.label} paper"]
    lines = [f"## {table.title}", ""]
    finished = [r for r in runs if _finished(table, r)]
    unfinished = [r for r in runs if cells_of(table, r.values) and not _finished(table, r)]
    outside = [r for r in runs if not cells_of(table, r.values)]
    lines.append(
        f"{len(finished)} finished run(s) under {where} ({len(unfinished)} unfinished, {len(outside)} outside the "
        "table's rows/columns). Ours: error = 100·(1 − accuracy), mean ± sample std over runs (seeds), n runs."
    )
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(table.rows):
        cols = [row.label]
        if row.test_size is not None:
            cols.append(str(row.test_size))
        if table.params:
            cols.append(_params_text(row, runs))
        for j, _ in enumerate(table.columns):
            ours = str(cells[i, j]) if (i, j) in cells else "—"
            paper = row.paper[j]
            cols += [ours, str(paper) if paper is not None else "—"]
        lines.append("| " + " | ".join(cols) + " |")
    lines += ["", TAG_NOTE]
    missing = [(table.rows[i].label, table.columns[j].label) for (i, j), c in cells.items() if not c.errors]
    if missing:
        command = multirun_command(table.name)
        lines.append("")
        lines.append(f"Missing cells: {', '.join(' / '.join(m) for m in missing)}. Run: `{command}`.")
    deviations = recipe_deviations(table, finished)
    if deviations:
        lines += ["", "Differences from the paper's recipe (PAPER.md §5):", *[f"- {d}" for d in deviations]]
    if unfinished:
        lines += ["", "Unfinished runs (no test metric yet):", *[f"- {r.path}" for r in unfinished]]
    if outside:
        lines += ["", "Runs outside the table's rows/columns:", *[f"- {r.path}" for r in outside]]
    return "\n".join(lines) + "\n"


def results_markdown(name: str, logs: str | Path = "logs") -> str:
    """The markdown report of table ``name`` from the runs under ``logs``."""
    table = get_table(name)
    where, runs = collect_runs(table, Path(logs))
    return render(table, runs, where)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print (and optionally write) the tables."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_modules.results",
        description="Print paper tables (PAPER.md §6) from finished runs, beside the paper's numbers.",
    )
    parser.add_argument("tables", nargs="+", help=f"table names ({', '.join(TABLES)}) or 'all'")
    parser.add_argument("--logs", default="logs", help="the logs directory train.py wrote to (default: logs)")
    parser.add_argument("--output", help="also write the markdown to this file")
    args = parser.parse_args(argv)
    everything = args.tables == ["all"]
    reports = []
    try:
        for name in TABLES if everything else args.tables:
            try:
                reports.append(results_markdown(name, args.logs))
            except FileNotFoundError:
                if not everything or not Path(args.logs).is_dir():
                    raise
        if not reports:
            raise FileNotFoundError(f"no runs of any table ({', '.join(TABLES)}) found under {args.logs}")
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report = "\n".join(reports)
    print(report)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
