"""A paper table from runs: group the runs into its cells, compare them with the paper, render markdown.

A cell shows the error ``100 * (1 - accuracy)`` as mean ± sample std over its runs (seeds), the run count, and the
paper's number (docs/paper.md §6) with its source tag, ``(unverified)`` included. Settings that differ from the paper's
recipe (docs/paper.md §5, as the table's experiment file holds it) are listed under the table.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.runs import Run, collect_runs
from analysis.table_specs import Column, Row, Table, command_params, get_table, recipe, sweep_seeds

TAG_NOTE = (
    "Paper numbers: docs/paper.md §6; untagged = stated in the paper, (unverified) = recalled from the paper, check "
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
    """The values (%) of the finished runs in one cell: errors or accuracies, as the table shows them, and their
    seeds; ``started`` when any run of the cell exists (finished or not)."""

    values: list[float]
    seeds: list[int]
    started: bool = False

    def __str__(self) -> str:
        if not self.values:
            return "unfinished" if self.started else "not run yet"
        mean = statistics.fmean(self.values)
        n = len(self.values)
        if n == 1:
            return f"{mean:.2f} (n=1)"
        return f"{mean:.2f} ± {statistics.stdev(self.values):.2f} (n={n})"


def cells_of(table: Table, values: Mapping[str, Any]) -> list[tuple[int, int]]:
    """The ``(row, column)`` cells a run with config ``values`` fills (columns may differ by metric only, e.g.
    top-1/top-5); empty when the run is outside the table."""
    return [
        (i, j)
        for i, row in enumerate(table.rows)
        for j, column in enumerate(table.columns)
        if row.match and _matches(values, row.match) and _matches(values, column.match)
    ]


def matching_runs(table: Table, row: Row, runs: Sequence[Run]) -> list[Run]:
    """The runs that fill a cell of ``row``."""
    index = table.rows.index(row)
    return [run for run in runs if any(i == index for i, _ in cells_of(table, run.values))]


def _finished(table: Table, run: Run) -> bool:
    return any(_metric_key(table.columns[j], table.rows[i]) in run.metrics for i, j in cells_of(table, run.values))


def build_cells(table: Table, runs: Sequence[Run]) -> dict[tuple[int, int], Cell]:
    """``{(row, column): Cell}`` for the rows that we train: error = 100 * (1 - accuracy), or the accuracy in %."""
    cells = {(i, j): Cell([], []) for i, row in enumerate(table.rows) if row.match for j in range(len(table.columns))}
    for run in runs:
        for i, j in cells_of(table, run.values):
            key = _metric_key(table.columns[j], table.rows[i])
            cells[i, j].started = True
            if key in run.metrics:
                accuracy = run.metrics[key]
                cells[i, j].values.append(100.0 * (accuracy if table.value == "accuracy" else 1.0 - accuracy))
                if run.values.get("seed") is not None:
                    cells[i, j].seeds.append(int(run.values["seed"]))
    return cells


def recipe_deviations(table: Table, runs: Sequence[Run]) -> list[str]:
    """One line per recipe key on which some runs differ from the recipe (the paper's, docs/paper.md §5, as the
    experiment file holds it), with the run counts, and one for runs that stopped before its number of steps."""
    lines = []
    expected_values = recipe(table)
    source = "paper" if table.has_paper_numbers else "recipe"
    steps = expected_values.get("trainer.max_steps")
    short = [int(r.metrics["step"]) for r in runs if steps and "step" in r.metrics and r.metrics["step"] < steps]
    if short:
        span = str(min(short)) if min(short) == max(short) else f"{min(short)}-{max(short)}"
        lines.append(f"steps trained: {span} in {len(short)} run(s) ({source}: {steps})")
    for key, expected in expected_values.items():
        counts: dict[str, int] = {}
        for run in runs:
            found = run.values.get(key)
            if not _same(found, expected):
                counts[repr(found)] = counts.get(repr(found), 0) + 1
        if counts:
            found_text = ", ".join(f"{value} in {n} run(s)" for value, n in sorted(counts.items()))
            lines.append(f"`{key}`: {found_text} ({source}: {expected!r})")
    return lines


def precision_note(runs: Sequence[Run]) -> list[str]:
    """Lines saying which precision the runs trained in, when they did not all train in one (``trainer.precision``
    resolves per machine: a grid trained over several machines, or a run resumed on another, can mix them)."""
    counts: dict[str, int] = {}
    for run in runs:
        if run.precisions:
            name = " then ".join(run.precisions)
            counts[name] = counts.get(name, 0) + 1
    if len(counts) < 2:
        return []
    found = "; ".join(f"{name}: {n} run(s)" for name, n in sorted(counts.items()))
    lines = [f"Precisions the runs trained in (resolved per machine: bf16-mixed where it computes bf16): {found}."]
    return lines + [f"- {run.path}: {' then '.join(run.precisions)}" for run in runs if len(run.precisions) > 1]


def _params_text(table: Table, row: Row, runs: Sequence[Run]) -> str:
    paper = str(row.paper_params_m) if row.paper_params_m is not None else "—"
    found = sorted({run.params for run in runs if run.params is not None and _matches(run.values, row.match)})
    if not found and row.command:
        found = [command_params(row.command)]
    shown = "/".join(f"{p / 1e6:.2f}" if p >= 1e6 else f"{p / 1e6:.3f}" for p in found)  # small nets: 3 decimals
    ours = shown if found and row.match else ("?" if row.match else "—")
    return f"{ours} / {paper}" if table.has_paper_numbers else ours


def render(table: Table, runs: Sequence[Run], where: Path) -> str:
    """The table as markdown: ours (mean ± std, n) beside the paper's numbers (where it has any), then notes."""
    cells = build_cells(table, runs)
    paper = table.has_paper_numbers
    header = [table.row_header]
    if table.rows[0].test_size is not None:
        header.append("test size")
    if table.params:
        header.append("params M (ours / paper)" if paper else "params M")
    for column in table.columns:
        header += [f"{column.label} ours", f"{column.label} paper"] if paper else [column.label]
    lines = [f"## {table.title}", ""]
    finished = [r for r in runs if _finished(table, r)]
    unfinished = [r for r in runs if cells_of(table, r.values) and not _finished(table, r)]
    outside = [r for r in runs if not cells_of(table, r.values)]
    shown = "error = 100·(1 − accuracy)" if table.value == "error" else "accuracy in %"
    lines.append(
        f"{len(finished)} finished run(s) under {where} ({len(unfinished)} unfinished, {len(outside)} outside the "
        f"table's rows/columns). Ours: {shown}, mean ± sample std over runs (seeds), n runs."
    )
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(table.rows):
        cols = [row.label]
        if row.test_size is not None:
            cols.append(str(row.test_size))
        if table.params:
            cols.append(_params_text(table, row, runs))
        for j, _ in enumerate(table.columns):
            cols.append(str(cells[i, j]) if (i, j) in cells else "—")
            if paper:
                cols.append(str(row.paper[j]) if row.paper[j] is not None else "—")
        lines.append("| " + " | ".join(cols) + " |")
    if paper:
        lines += ["", TAG_NOTE]
    seeds = sweep_seeds(table)
    commands = [(row.label, row.command) for row in table.rows if row.command]
    if commands:
        many = len(seeds) > 1
        listed = ", ".join(map(str, seeds))
        note = f"each trains the experiment's seeds, {listed}" if many else "one seed; add `seed=0,1,2` for three"
        lines += ["", f"Commands ({note}):", *[f"- {label}: `{c}`" for label, c in commands]]
    missing = [(table.rows[i], table.columns[j].label) for (i, j), c in cells.items() if not c.values]
    if missing:
        lines.append("")
        named = ", ".join(f"{row.label} / {column}" for row, column in missing)
        todo = sorted({row.command or table.command for row, _ in missing})
        lines.append(f"Missing cells: {named}. Run: {', '.join(f'`{c}`' for c in todo)}.")
    partial = [
        (table.rows[i], table.columns[j].label, [seed for seed in seeds if seed not in cell.seeds])
        for (i, j), cell in cells.items()
        if cell.values and set(seeds) - set(cell.seeds)
    ]
    if partial:
        named = "; ".join(
            f"{row.label}{'' if len(table.columns) == 1 else f' / {column}'}: {', '.join(map(str, absent))}"
            for row, column, absent in partial
        )
        lines += ["", f"Seeds of the experiment ({', '.join(map(str, seeds))}) not finished yet: {named}."]
    deviations = recipe_deviations(table, finished)
    if deviations:
        recipe_name = (
            "the paper's recipe (docs/paper.md §5)" if paper else f"the recipe of experiment={table.task_name}"
        )
        lines += ["", f"Differences from {recipe_name}:", *[f"- {d}" for d in deviations]]
    changed = [(run, change) for run in finished for change in run.config_changes]
    if changed:
        lines += ["", "Runs resumed under a changed config (their run.json), so trained under two configs:"]
        for run, change in changed:
            listed = "; ".join(f"`{key}`: {old!r} -> {new!r}" for key, (old, new) in change.get("changes", {}).items())
            lines.append(f"- {run.path}, from step {change.get('resumed_at_step')}: {listed}")
    precisions = precision_note(finished)
    if precisions:
        lines += ["", *precisions]
    if unfinished:
        lines += ["", "Unfinished runs (no test metric yet):", *[f"- {r.path}" for r in unfinished]]
    if outside:
        lines += ["", "Runs outside the table's rows/columns:", *[f"- {r.path}" for r in outside]]
    return "\n".join(lines) + "\n"


def table_runs(table: Table, logs: Path) -> tuple[Path, list[Run]]:
    """Every run of ``table`` under ``logs``; raises with where it looked and the command when there is none."""
    base, runs = collect_runs(logs, table.task_name, keys_needed(table))
    if not runs:
        raise FileNotFoundError(
            f"no runs of {table.name} found under {base}: looked for */.hydra/config.yaml and "
            f"*/wandb/offline-run-*/run-*.wandb with task_name={table.task_name}. Run the table first: {table.command}"
        )
    return base, runs


def results_markdown(name: str, logs: str | Path = "logs") -> str:
    """The markdown report of table ``name`` from the runs under ``logs``."""
    table = get_table(name)
    where, runs = table_runs(table, Path(logs))
    return render(table, runs, where)
