"""Finding and reading the runs that train.py wrote: their saved config, CSV and W&B metrics, eval.py results.

A run is a directory with a saved config, ``.hydra/config.yaml`` (read with OmegaConf; no Hydra needed) or, without
one, an offline W&B log ``wandb/offline-run-*/run-*.wandb``. Its metrics are the last value of every column of its
CSV logs (``csv/metrics.csv`` or ``csv/version_<n>/metrics.csv``, one per restart, newest last), else of its newest
finished W&B log's summary; other test sizes come from the ``eval_results.json`` files that eval.py wrote for one of
its checkpoints (as ``test/acc1@<size>``). Its ``run.json`` says whether it was resumed under a changed config.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from analysis.wandb_offline import DamagedLogError, OfflineRun, read_offline_run
from lightning_modules.run_directory import RunDirectory


@dataclass
class Run:
    """One training run: its directory, the config values the tables need, its metrics, its parameter count."""

    path: Path
    values: dict[str, Any]
    metrics: dict[str, float]
    params: float | None = None
    config_changes: tuple[dict[str, Any], ...] = ()  # run.json's record of resumptions under a changed config
    precisions: tuple[str, ...] = ()  # the precisions it trained in, in order (resolved per machine)


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


def csv_folders(run: Path) -> list[Path]:
    """The CSV logger's folders of ``run``, oldest first: ``csv/`` or ``csv/version_<n>/`` (one per resume)."""
    versions = [p for p in run.glob("csv/version_*") if p.name.removeprefix("version_").isdigit()]
    return [run / "csv", *sorted(versions, key=lambda p: int(p.name.removeprefix("version_")))]


def _csv_hparams(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """The hyper-parameters the CSV logger saved in each of ``folders`` that has them, oldest first."""
    paths = (folder / "hparams.yaml" for folder in folders)
    return [yaml.safe_load(path.read_text()) or {} for path in paths if path.is_file()]


def run_precisions(run: Path) -> tuple[str, ...]:
    """The precisions the run in ``run`` trained in, in order (:func:`_precisions`)."""
    return _precisions(_csv_hparams(csv_folders(run)), RunDirectory(run).read_record())


def tested_precision(run: Path) -> str | None:
    """The precision the finished run in ``run`` was tested in, as resolved where it ran: run.json's record, else its
    last session's (its CSV log's); None when neither says. Its saved config may say ``${fast_precision:cpu}``, which
    resolves per machine, so it is not read here."""
    finished = RunDirectory(run).read_record().get("finished") or {}
    return finished.get("precision") or next(reversed(run_precisions(run)), None)


def _precisions(hparams: Sequence[dict[str, Any]], record: dict[str, Any]) -> tuple[str, ...]:
    """The precisions a run trained in, in order, each once per change: the resolved ``trainer.precision`` the CSV
    logger saved with each session's hyper-parameters, else run.json's record of them."""
    found = [session.get("trainer.precision") for session in hparams]
    if not any(found):
        found = [entry.get("precision") for entry in record.get("precision", []) if isinstance(entry, dict)]
    precisions: list[str] = []
    for precision in found:
        if precision and (not precisions or precisions[-1] != str(precision)):
            precisions.append(str(precision))
    return tuple(precisions)


def _csv_params(hparams: Sequence[dict[str, Any]]) -> float | None:
    """Parameter count the CSV logger saved with the hyper-parameters (``model/params_total``), the newest."""
    value = None
    for session in hparams:
        value = session.get("model/params_total", value)
    return None if value is None else float(value)


def load_run(run: Path, keys: set[str]) -> Run:
    """Read one run directory: config values (Hydra, else W&B), test metrics (CSV, else W&B), parameter count.
    The W&B log is only parsed when the Hydra config or the CSV test metrics are missing."""
    hydra_config = run / ".hydra" / "config.yaml"
    values = _hydra_values(hydra_config, keys) if hydra_config.is_file() else {}
    folders = csv_folders(run)
    metrics: dict[str, float] = {}
    for path in (folder / "metrics.csv" for folder in folders):
        if path.is_file():
            metrics.update(_csv_metrics(path))
    hparams = _csv_hparams(folders)
    params = _csv_params(hparams)
    wandb_run = _newest_wandb_run(run) if not values or "test/acc1" not in metrics else None
    if wandb_run is not None:
        config = wandb_run.flat_config
        for key in keys:
            if values.get(key) is None and key in config:
                values[key] = config[key]
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
    record = RunDirectory(run).read_record()
    changes = tuple(c for c in record.get("config_changes", []) if isinstance(c, dict))
    return Run(run, values, metrics, params, changes, _precisions(hparams, record))


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


def collect_runs(logs: Path, task_name: str, keys: set[str]) -> tuple[Path, list[Run]]:
    """Every run of ``task_name`` under ``logs`` (finished or not), with the config values of ``keys``, and where it
    looked. Raises FileNotFoundError when ``logs`` does not exist; the list may be empty."""
    if not logs.is_dir():
        raise FileNotFoundError(f"logs directory {logs} does not exist (give the one train.py wrote to with --logs)")
    base, dirs = find_run_dirs(logs, task_name)
    keys = {"task_name", "seed", "data.image_size", *keys}
    runs = [run for run in (load_run(d, keys) for d in dirs) if run.values.get("task_name") == task_name]
    _attach_eval_results(runs, logs)
    return base, runs
