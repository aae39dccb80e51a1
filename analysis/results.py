"""Print the paper's tables from finished runs, beside the paper's numbers.

    python -m analysis.results table3 [--logs logs] [--output results/table3.md]
    python -m analysis.results all

Runs are the directories train.py writes (``python train.py -m experiment=table3`` puts a table's jobs under
``logs/table3/multiruns/<overrides>/``); see :mod:`analysis.runs` for what is read and :mod:`analysis.tables` for
how a table is built. The tables themselves (layout, paper numbers) are data: ``analysis/tables.yaml``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.table_specs import load_tables
from analysis.tables import results_markdown


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print (and optionally write) the tables."""
    tables = load_tables()
    parser = argparse.ArgumentParser(
        prog="python -m analysis.results",
        description="Print paper tables (PAPER.md §6) from finished runs, beside the paper's numbers.",
    )
    parser.add_argument("tables", nargs="+", help=f"table names ({', '.join(tables)}) or 'all'")
    parser.add_argument("--logs", default="logs", help="the logs directory train.py wrote to (default: logs)")
    parser.add_argument("--output", help="also write the markdown to this file")
    args = parser.parse_args(argv)
    everything = args.tables == ["all"]
    reports = []
    try:
        for name in tables if everything else args.tables:
            try:
                reports.append(results_markdown(name, args.logs))
            except FileNotFoundError:
                if not everything or not Path(args.logs).is_dir():
                    raise
        if not reports:
            raise FileNotFoundError(f"no runs of any table ({', '.join(tables)}) found under {args.logs}")
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
