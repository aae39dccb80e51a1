"""A paper table from runs: group the runs into its cells, compare them with the paper, render markdown.

A cell shows the error ``100 * (1 - accuracy)`` as mean ± sample std over its runs (seeds), the run count, and the
paper's number (PAPER.md §6) with its source tag, ``(unverified)`` included. Settings that differ from the paper's
recipe (PAPER.md §5, as the table's experiment file holds it) are listed under the table.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.runs import Run, collect_runs
from analysis.table_specs import Column, Row, Table, get_table, recipe

TAG_NOTE = (
    "Paper numbers: PAPER.md §6; untagged = stated in the paper, (unverified) = recalled from the paper, check "
    "before relying on it, (derived) = arithmetic on paper numbers, (README) = the authors' README. "
    "'—' = a paper-only baseline, not trained here."
)


def keys_needed(table: Table) -> set[str]:
    """The config keys a run must be read for to place it in ``table`` and check its recipe."""
    keys = set(table.recipe_keys)
    for part in (*table.rows, *table.columns):
        keys |= set(part.match)
    return keys


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
    """One line per recipe key on which some runs differ from the paper (PAPER.md §5, as the experiment file holds
    it), with the run counts, and one for runs that stopped before the paper's number of iterations."""
    lines = []
    expected_values = recipe(table)
    steps = expected_values.get("trainer.max_steps")
    short = [int(r.metrics["step"]) for r in runs if steps and "step" in r.metrics and r.metrics["step"] < steps]
    if short:
        span = str(min(short)) if min(short) == max(short) else f"{min(short)}-{max(short)}"
        lines.append(f"steps trained: {span} in {len(short)} run(s) (paper: {steps})")
    for key, expected in expected_values.items():
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
        lines.append("")
        lines.append(f"Missing cells: {', '.join(' / '.join(m) for m in missing)}. Run: `{table.command}`.")
    deviations = recipe_deviations(table, finished)
    if deviations:
        lines += ["", "Differences from the paper's recipe (PAPER.md §5):", *[f"- {d}" for d in deviations]]
    if unfinished:
        lines += ["", "Unfinished runs (no test metric yet):", *[f"- {r.path}" for r in unfinished]]
    if outside:
        lines += ["", "Runs outside the table's rows/columns:", *[f"- {r.path}" for r in outside]]
    return "\n".join(lines) + "\n"


def table_runs(table: Table, logs: Path) -> tuple[Path, list[Run]]:
    """Every run of ``table`` under ``logs``; raises with where it looked and the command when there is none."""
    base, runs = collect_runs(logs, table.name, keys_needed(table))
    if not runs:
        raise FileNotFoundError(
            f"no runs of {table.name} found under {base}: looked for */.hydra/config.yaml and "
            f"*/wandb/offline-run-*/run-*.wandb with task_name={table.name}. Run the table first: {table.command}"
        )
    return base, runs


def results_markdown(name: str, logs: str | Path = "logs") -> str:
    """The markdown report of table ``name`` from the runs under ``logs``."""
    table = get_table(name)
    where, runs = table_runs(table, Path(logs))
    return render(table, runs, where)
