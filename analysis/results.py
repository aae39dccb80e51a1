"""Print tables from finished runs: the paper's beside its numbers, and our own (Fashion-MNIST, RESULTS.md).

    python -m analysis.results table3 [--logs logs] [--output results/table3.md]
    python -m analysis.results all
    python -m analysis.results fmnist --output RESULTS.md      # with learning curves and the attention masks

Runs are the directories train.py writes (``python train.py -m experiment=table3`` puts a table's jobs under
``logs/table3/multiruns/<overrides>/``); see :mod:`analysis.runs` for what is read and :mod:`analysis.tables` for
how a table is built. The tables themselves (layout, paper numbers, the paper's claims as pairs of rows, tested on
the same test images by :mod:`analysis.paired`) are data: ``analysis/tables.yaml``. With
``--output``, each table's figures (:mod:`analysis.figures`) are written beside the file, into ``--figures``
(default: ``results/`` next to it), and linked from it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.figures import attention_networks, mask_statistics_markdown, plot_curves, plot_masks
from analysis.paired import comparisons_markdown
from analysis.table_specs import get_table, load_tables
from analysis.tables import render, table_runs
from resattn.checkpoints import CheckpointError


def table_document(name: str, logs: Path, figures: Path | None, document: Path | None) -> str:
    """The markdown of table ``name`` from the runs under ``logs``; with ``figures``, its learning curves and mask
    grid are drawn there and linked (relative to ``document``'s folder)."""
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
    masks = plot_masks(networks[0], figures / f"{name}_masks.png") if networks else None  # the main network's
    drawn = [
        ("Learning curves", plot_curves(table, runs, figures / f"{name}_curves.png")),
        ("Attention masks of the best network", masks),
    ]
    for title, path in drawn:
        if path is not None:
            link = path.resolve().relative_to(base.resolve()) if path.resolve().is_relative_to(base.resolve()) else path
            text += f"\n### {title}\n\n![{title.lower()}]({link})\n"
    if networks:
        text += "\n" + mask_statistics_markdown(networks)
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
    reports = []
    try:
        for name in tables if everything else args.tables:
            try:
                reports.append(table_document(name, logs, figures, output))
            except FileNotFoundError:
                if not everything or not logs.is_dir():
                    raise
        if not reports:
            raise FileNotFoundError(f"no runs of any table ({', '.join(tables)}) found under {args.logs}")
    except (ValueError, FileNotFoundError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    command = shlex.join(["python", "-m", "analysis.results", *(argv if argv is not None else sys.argv[1:])])
    report = "\n".join(reports)
    print(report)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        header = f"<!-- Written by `{command}` from the run logs; rerun it instead of editing. -->\n\n"
        output.write_text(header + report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
