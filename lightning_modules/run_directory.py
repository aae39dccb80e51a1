"""A training run's directory: one process at a time, its saved config and log, its W&B run id, its outcome.

Rerunning a command lands in the same directory (``conf/hydra/default.yaml`` names it after the overrides), which
is how a run resumes. This module makes that safe and cheap:

- **Lock** (``.lock``): an exclusive ``flock`` held for the whole run, with the holder's pid, host and command in
  the file. A second process on the same directory is refused at once, naming the holder, before it writes
  anything there. The kernel drops the lock when its process dies, so the lock of a killed run is taken over.
- **Record** (``run.json``): the W&B run id, so a resumed run continues the same W&B run, and, once ``fit`` (and
  ``test``) finished, the run's length and results, so that rerunning a finished command reports them instead of
  training again.
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
from collections.abc import Mapping
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
        self._lock_fd: int | None = None
        self._log_handler: logging.Handler | None = None

    @property
    def record_path(self) -> Path:
        return self.path / RECORD_FILE

    # ---- lock -------------------------------------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the directory's lock or raise :class:`RunLockedError` naming the process that holds it."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.path / LOCK_FILE
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_json(lock) or {}
            os.close(fd)
            raise RunLockedError(
                f"{self.path} is in use by process {holder.get('pid', '?')} on {holder.get('host', '?')} "
                f"(started {holder.get('started', '?')}: {holder.get('command', '?')}). Two runs in one directory "
                "would overwrite each other's checkpoints, so this one stops without touching it. Wait for that run "
                f"to finish (rerunning the command then resumes or reports it), stop it (kill {holder.get('pid', '?')})"
                ", or give this run a directory of its own (change an override, or set hydra.run.dir=...)."
            ) from None
        previous = _read_json(lock)  # a clean end empties the file: a pid left here is a run that was killed
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
        self._lock_fd = fd

    def release(self) -> None:
        """Empty the lock file (a clean end, not a crash) and drop the lock; detach the log file."""
        self.detach_log()
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)  # closing the last descriptor releases the flock
            self._lock_fd = None

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

    def attach_log(self, name: str = "train.log") -> None:
        """Append every log record of this process (all loggers, Python warnings) to ``<run dir>/<name>``."""
        handler = logging.FileHandler(self.path / name)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logging.getLogger().addHandler(handler)
        logging.captureWarnings(True)  # warnings reach the console and the file through logging
        self._log_handler = handler

    def log_failure(self) -> None:
        """Write the exception being handled, with its traceback, into the log file only (the console gets
        Hydra's report of it)."""
        if self._log_handler is not None:
            record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "the run failed", None, sys.exc_info())
            self._log_handler.handle(record)

    def detach_log(self) -> None:
        if self._log_handler is not None:
            logging.captureWarnings(False)
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

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
