"""A training run's directory: one process at a time, its saved config and log, its W&B run id, its outcome.

Rerunning a command lands in the same directory (``conf/hydra/default.yaml`` names it after the overrides), which
is how a run resumes. This module makes that safe and cheap:

- **Lock** (``.lock``): an exclusive ``flock`` held for the whole run, with the holder's pid, host and command in
  the file. A second process on the same directory is refused at once, naming the holder, before it writes
  anything there. The kernel drops the lock when its process dies, so the lock of a killed run is taken over.
- **Record** (``run.json``): the W&B run id, so a resumed run continues the same W&B run, and its W&B group, which
  eval.py's runs of its checkpoints join; once ``fit`` (and ``test``) finished, the run's length and results, so that
  rerunning a finished command reports them instead of training again; the config keys each resumption changed (a
  longer schedule, an edited YAML), with the step; and how the latest training session stands (``status``: running,
  finished, stopped or failed, with the step and the error's one-line message).
- **Log** (``train.log``): everything the console shows through ``logging`` (Lightning's and Hydra's loggers and
  Python warnings included) and the error that ended a failed run.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
RECORD_FILE = "run.json"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class RunLockedError(RuntimeError):
    """Another live process is running in this run directory."""


class RunDirectory:
    """The directory of one training run (``hydra.run.dir`` or a multirun job's ``subdir``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def record_path(self) -> Path:
        return self.path / RECORD_FILE

    # ---- lock -------------------------------------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's lock for the block, or raise :class:`RunLockedError` naming the process that holds
        it. Leaving the block (also by an error) empties the lock file; a killed process leaves its pid there, and the
        next run takes over."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK_FILE
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLockedError(self._in_use(_read_json(lock) or {})) from None
            previous = _read_json(lock)  # a pid left here is a run that was killed
            if previous and previous.get("pid"):
                log.warning("Taking over %s from process %s, which ended without releasing it", lock, previous["pid"])
            holder = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)  # also after an error: only a killed process leaves its pid behind
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def _in_use(self, holder: Mapping[str, Any]) -> str:
        pid = holder.get("pid", "?")
        return (
            f"{self.path} is in use by process {pid} on {holder.get('host', '?')} (started "
            f"{holder.get('started', '?')}: {holder.get('command', '?')}). Two runs in one directory would overwrite "
            "each other's checkpoints, so this one stops without touching it. Wait for that run to finish (rerunning "
            f"the command then resumes or reports it), stop it (kill {pid}), or give this run a directory of its own "
            "(change an override, or set hydra.run.dir=...)."
        )

    # ---- config and log ---------------------------------------------------------------------------------------
    def save_config(self, cfg: DictConfig, hydra_cfg: DictConfig | None, overrides: list[str]) -> None:
        """Write ``.hydra/config.yaml``, ``hydra.yaml`` and ``overrides.yaml`` (as Hydra would; its own saving is
        off so that a refused second run cannot overwrite a running one's files)."""
        folder = self.path / ".hydra"
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, folder / "config.yaml")
        if hydra_cfg is not None:
            OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), folder / "hydra.yaml")
        OmegaConf.save(OmegaConf.create(list(overrides)), folder / "overrides.yaml")

    def saved_config(self) -> DictConfig | None:
        """The run's saved ``.hydra/config.yaml`` (None when absent or unreadable)."""
        try:
            cfg = OmegaConf.load(self.path / ".hydra" / "config.yaml")
        except (OSError, ValueError):
            return None
        return cfg if isinstance(cfg, DictConfig) else None

    @contextmanager
    def logged(self, name: str = "train.log") -> Iterator[None]:
        """Append every log record of the block (all loggers, Python warnings) to ``<run dir>/<name>``, and the
        traceback of an exception that ends it (into the file only: the console gets Hydra's report of it), whose
        ``traceback_log`` attribute then names the file."""
        handler = logging.FileHandler(self.path / name)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        root.addHandler(handler)
        logging.captureWarnings(True)  # warnings reach the console and the file through logging
        try:
            yield
        except Exception as err:
            handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "the run failed", None, sys.exc_info()))
            err.traceback_log = self.path / name  # type: ignore[attr-defined]
            raise
        finally:
            logging.captureWarnings(False)
            root.removeHandler(handler)
            handler.close()

    # ---- record -----------------------------------------------------------------------------------------------
    def read_record(self) -> dict[str, Any]:
        """``run.json``'s content ({} when absent or unreadable: a record is a convenience, never a blocker)."""
        return _read_json(self.record_path) or {}

    def _write_record(self, record: Mapping[str, Any]) -> None:
        partial = self.record_path.with_name(f".{RECORD_FILE}.partial")
        partial.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(partial, self.record_path)

    def wandb_id(self, *, resuming: bool, new_id: str) -> str:
        """The W&B run id of this run: the stored one when resuming it, else ``new_id`` (stored for next time)."""
        record = self.read_record()
        if resuming and record.get("wandb_id"):
            return str(record["wandb_id"])
        self._write_record({**record, "wandb_id": new_id})
        return new_id

    def note_wandb_group(self, group: str) -> None:
        """Store the W&B group this run logs to, for the evaluations of its checkpoints to join."""
        record = self.read_record()
        if record.get("wandb_group") != group:
            self._write_record({**record, "wandb_group": group})

    def wandb_group(self) -> str | None:
        """The W&B group stored by :meth:`note_wandb_group`, else None."""
        group = self.read_record().get("wandb_group")
        return str(group) if group else None

    def finished(self, length: Mapping[str, Any]) -> dict[str, Any] | None:
        """The stored outcome of a finished run of this ``length`` (``max_steps``/``max_epochs``), else None."""
        outcome = self.read_record().get("finished")
        if isinstance(outcome, dict) and outcome.get("length") == dict(length):
            return outcome
        return None

    def mark_finished(self, length: Mapping[str, Any], metrics: Mapping[str, float], **details: Any) -> None:
        """Store the outcome of a fit (and test) that ran to its end with this ``length``."""
        outcome = {
            "length": dict(length),
            "metrics": dict(metrics),
            "at": time.strftime("%Y-%m-%d %H:%M:%S"),
            **details,
        }
        self._write_record({**self.read_record(), "finished": outcome})

    def note_config_changes(self, changes: Mapping[str, tuple[Any, Any]], step: int | None) -> None:
        """Append to the record the config keys that a resumed run changed (``{key: (before, now)}``) and the step
        it resumed at, so that a run trained under more than one config says so."""
        entry = {"at": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed_at_step": step}
        entry["changes"] = {key: list(values) for key, values in changes.items()}
        record = self.read_record()
        self._write_record({**record, "config_changes": [*record.get("config_changes", []), entry]})

    def note_precision(self, precision: str, step: int) -> str | None:
        """Record the precision this session trains in (``trainer.precision`` as resolved on this machine) from
        ``step``; return the one the run trained in before when it differs (None for the first session, or the same
        precision). ``${fast_precision:cpu}`` resolves per machine, so a run resumed on another CPU can change it."""
        record = self.read_record()
        history = [entry for entry in record.get("precision", []) if isinstance(entry, dict)]
        before = history[-1].get("precision") if history else None
        if before != precision:
            history.append({"precision": precision, "from_step": step})
            self._write_record({**record, "precision": history})
        return before if before != precision else None

    def note_session(self, state: str, **details: Any) -> None:
        """Record how the latest training session stands: ``running`` from its start, then ``finished``,
        ``stopped`` or ``failed``, with ``details`` (the step, a failure's one-line message; None values left out)."""
        status = {"state": state, "at": time.strftime("%Y-%m-%d %H:%M:%S")}
        status |= {key: value for key, value in details.items() if value is not None}
        self._write_record({**self.read_record(), "status": status})

    def forget_finished(self) -> None:
        """Drop the stored outcome (the run is being trained further or again)."""
        record = self.read_record()
        if "finished" in record:
            record.pop("finished")
            self._write_record(record)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
