"""Print tables from finished runs: the paper's beside its numbers, and our own (Fashion-MNIST, RESULTS.md).

    python -m analysis.results table3 [--logs logs] [--output results/table3.md]
    python -m analysis.results all
    python -m analysis.results fmnist --output RESULTS.md      # with learning curves and the attention masks
    python -m analysis.results cluttered mask_decay --output RESULTS.md

Runs are the directories train.py writes (``python train.py -m experiment=table3`` puts a table's jobs under
``logs/table3/multiruns/<overrides>/``); see :mod:`analysis.runs` for what is read and :mod:`analysis.tables` for
how a table is built. The tables themselves (layout, paper numbers, the paper's claims as pairs of rows, tested on
the same test images by :mod:`analysis.paired`) are data: ``analysis/tables.yaml``. With
``--output``, each table's figures (:mod:`analysis.figures`) are written beside the file, into ``--figures``
(default: ``results/`` next to it), and linked from it, and its attention networks' masks are measured
(:mod:`analysis.mask_sections`). Each table is one section of the file (:mod:`analysis.sections`): writing some
tables replaces their sections and keeps the others.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.figures import attention_networks, plot_curves, plot_masks
from analysis.mask_sections import networks_markdown, runs_markdown
from analysis.paired import comparisons_markdown
from analysis.sections import update_document
from analysis.table_specs import get_table, load_tables
from analysis.tables import render, table_runs
from resattn.checkpoints import CheckpointError


def table_document(name: str, logs: Path, figures: Path | None, document: Path | None) -> str:
    """The markdown of table ``name`` from the runs under ``logs``; with ``figures``, its learning curves and mask
    grids are drawn there and linked (relative to ``document``'s folder), and its masks measured."""
    table = get_table(name)
    where, runs = table_runs(table, logs)
    text = render(table, runs, where)
    claims = comparisons_markdown(table, runs)
    if claims:
        text += "\n" + claims
    if figures is None:
        return text
    base = document.parent if document is not None else Path.cwd()
    networks = attention_networks(table, runs)
    drawn = [("Learning curves", plot_curves(table, runs, figures / f"{name}_curves.png"))]
    for index, trained in enumerate(networks[: table.mask_grids]):
        path = figures / (f"{name}_masks.png" if index == 0 else f"{name}_masks_{index + 1}.png")
        drawn.append((f"Attention masks of the best network: {trained.label}", plot_masks(trained, path)))
    for title, path in drawn:
        if path is not None:
            link = path.resolve().relative_to(base.resolve()) if path.resolve().is_relative_to(base.resolve()) else path
            text += f"\n### {title}\n\n![{title.lower()}]({link})\n"
    if table.measures == "networks" and networks:
        text += "\n" + networks_markdown(networks)
    elif table.measures == "runs":
        text += "\n" + runs_markdown(table, runs)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print (and optionally write, with figures) the tables."""
    tables = load_tables()
    parser = argparse.ArgumentParser(
        prog="python -m analysis.results",
        description="Print tables from finished runs: the paper's (docs/paper.md §6) beside its numbers, and our own.",
    )
    parser.add_argument("tables", nargs="+", help=f"table names ({', '.join(tables)}) or 'all'")
    parser.add_argument("--logs", default="logs", help="the logs directory train.py wrote to (default: logs)")
    parser.add_argument("--output", help="also write the markdown (and the tables' figures) to this file")
    parser.add_argument("--figures", help="folder for the figures (default with --output: results/ beside it)")
    args = parser.parse_args(argv)
    everything = args.tables == ["all"]
    output = Path(args.output) if args.output else None
    figures = Path(args.figures) if args.figures else (output.parent / "results" if output else None)
    logs = Path(args.logs)
    reports = {}
    try:
        for name in tables if everything else args.tables:
            try:
                reports[name] = table_document(name, logs, figures, output)
            except FileNotFoundError:
                if not everything or not logs.is_dir():
                    raise
        if not reports:
            raise FileNotFoundError(f"no runs of any table ({', '.join(tables)}) found under {args.logs}")
        command = shlex.join(["python", "-m", "analysis.results", *(argv if argv is not None else sys.argv[1:])])
        print("\n".join(reports.values()))
        if output is not None:
            update_document(output, reports, command)
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
