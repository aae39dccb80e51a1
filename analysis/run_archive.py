"""Runs kept in the repository, so that a study of many runs outlives the machine that trained them.

A grid of long CPU runs (``experiment=cluttered``: 12 runs of about 45 minutes) takes several sessions, and
``logs/`` is local to one machine. ``save`` copies what a finished run's results are made from into a folder that
can be committed (default ``results/runs/``); ``restore`` puts it back under ``logs/`` on another machine, where
``train.py -m`` then reports the run as finished instead of training it again, and ``analysis.results`` and
``analysis.export_weights`` read it as if it had been trained there.

    python -m analysis.run_archive save "logs/cluttered/multiruns/experiment:cluttered"
    python -m analysis.run_archive restore

Kept per run: the saved config (``.hydra/``), the record (``run.json``), the log (``train.log``), the CSV metrics, the
test predictions the analysis kept (``predictions/``, :mod:`analysis.predictions`) and the best checkpoint that the run
was tested with, reduced to what evaluation reads (weights and hyper-parameters: about a third of the file). A run that
has not finished is passed over, unless ``--with-unfinished`` keeps its ``last.ckpt`` whole, optimiser state included,
so that it resumes exactly where it stopped. W&B's offline logs stay behind (``wandb sync`` them from the machine that
trained). Archived folder names replace the ``:`` of Hydra's job names by ``=`` (``:`` cannot be in a Windows path);
each folder's ``archived.json`` names its place under ``logs/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from analysis.predictions import FOLDER as PREDICTIONS_FOLDER
from analysis.run_data import finished_best_checkpoint
from lightning_modules.callbacks import LastCheckpoint
from lightning_modules.run_directory import LOCK_FILE, RECORD_FILE
from resattn.checkpoints import read_checkpoint

PLACE_FILE = "archived.json"
KEPT_FILES = (RECORD_FILE, "train.log")
KEPT_FOLDERS = (".hydra", "csv", PREDICTIONS_FOLDER)
EVALUATION_KEYS = ("state_dict", "hyper_parameters", "epoch", "global_step", "pytorch-lightning_version")


@dataclass(frozen=True)
class Outcome:
    """What happened to one run: ``saved``, ``saved unfinished``, ``skipped`` or ``restored``, and why."""

    run: Path
    action: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.action}: {self.run}" + (f" ({self.detail})" if self.detail else "")


def run_directories(folder: Path) -> Iterator[Path]:
    """``folder`` itself when it is a run directory (it holds ``run.json``), else every run directory under it."""
    if (folder / RECORD_FILE).is_file():
        yield folder
        return
    yield from sorted(record.parent for record in folder.rglob(RECORD_FILE))


def archived_name(logs_path: str) -> str:
    return logs_path.replace(":", "=")


def _copy_tree(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(LOCK_FILE))


def save_run(run: Path, logs: Path, archive: Path, *, with_unfinished: bool = False) -> Outcome:
    """Copy ``run`` (a run directory under ``logs``) into ``archive``, replacing an earlier copy of it."""
    logs_path = run.resolve().relative_to(logs.resolve()).as_posix()
    last = run / "checkpoints" / LastCheckpoint.FILENAME
    try:
        checkpoint, action = finished_best_checkpoint(run), "saved"
    except FileNotFoundError as missing:
        return Outcome(run, "skipped", str(missing))
    except ValueError:  # not finished
        if not with_unfinished:
            return Outcome(run, "skipped", "not finished; --with-unfinished keeps its last.ckpt")
        if not last.is_file():
            return Outcome(run, "skipped", "no last.ckpt to resume from")
        checkpoint, action = last, "saved unfinished"
    target = archive / archived_name(logs_path)
    if target.exists():
        shutil.rmtree(target)
    (target / "checkpoints").mkdir(parents=True)
    for name in KEPT_FILES:
        if (run / name).is_file():
            shutil.copy2(run / name, target / name)
    for name in KEPT_FOLDERS:
        _copy_tree(run / name, target / name)
    if action == "saved":
        content = read_checkpoint(checkpoint)
        torch.save(
            {key: content[key] for key in EVALUATION_KEYS if key in content}, target / "checkpoints" / checkpoint.name
        )
    else:
        shutil.copy2(checkpoint, target / "checkpoints" / checkpoint.name)
    (target / PLACE_FILE).write_text(
        json.dumps({"logs_path": logs_path, "checkpoint": checkpoint.name}, indent=2) + "\n"
    )
    return Outcome(run, action, str(target))


def restore_run(archived: Path, logs: Path) -> Outcome:
    """Copy one archived run back to its place under ``logs``, unless a run is already there: a run in ``logs`` is
    at least as far along as its archived copy (it is where the copy came from, or it resumed from it)."""
    place = json.loads((archived / PLACE_FILE).read_text())
    run = logs / place["logs_path"]
    if (run / RECORD_FILE).is_file():
        return Outcome(run, "skipped", "a run is already there")
    run.mkdir(parents=True, exist_ok=True)
    for item in archived.iterdir():
        if item.name == PLACE_FILE:
            continue
        if item.is_dir():
            _copy_tree(item, run / item.name)
        else:
            shutil.copy2(item, run / item.name)
    return Outcome(run, "restored", f"from {archived}")


def archived_runs(archive: Path) -> list[Path]:
    return sorted(place.parent for place in archive.rglob(PLACE_FILE))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.run_archive",
        description="Keep finished runs in the repository (save) and put them back under logs/ (restore).",
    )
    parser.add_argument("--logs", default="logs", help="the logs directory train.py writes to (default: logs)")
    parser.add_argument("--archive", default="results/runs", help="the archive folder (default: results/runs)")
    commands = parser.add_subparsers(dest="command", required=True)
    save = commands.add_parser("save", help="copy run directories (or every run under folders) into the archive")
    save.add_argument("runs", nargs="+", help="run directories or folders of them, under --logs")
    save.add_argument("--with-unfinished", action="store_true", help="also keep unfinished runs, whole last.ckpt")
    commands.add_parser("restore", help="copy every archived run back under --logs where no run is")
    args = parser.parse_args(argv)
    logs, archive = Path(args.logs), Path(args.archive)
    if args.command == "save":
        outcomes = []
        for folder in map(Path, args.runs):
            if not folder.is_dir():
                parser.error(f"{folder} is not a folder; give run directories of train.py or folders that hold them")
            if not folder.resolve().is_relative_to(logs.resolve()):
                parser.error(f"{folder} is not under the logs directory {logs} (set --logs to where train.py wrote it)")
            found = list(run_directories(folder))
            if not found:
                parser.error(f"{folder} holds no run of train.py (no run.json under it)")
            outcomes += [save_run(run, logs, archive, with_unfinished=args.with_unfinished) for run in found]
    else:
        if not archive.is_dir():
            parser.error(f"no archive at {archive}; save runs into it first (python -m analysis.run_archive save ...)")
        outcomes = [restore_run(archived, logs) for archived in archived_runs(archive)]
    for outcome in outcomes:
        print(outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
