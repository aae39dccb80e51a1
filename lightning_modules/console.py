"""What train.py and eval.py leave out of the console (and train.log): messages that say nothing about the run, and
the traceback of a bad input, whose message says it all (:func:`bad_input_reported`).

Lightning advertises its cloud products on every run ("💡 Tip: ... try installing litlogger"), says that it does
not add the model summary callback that conf/callbacks already holds, warns that the
model summary estimates bf16 sizes as fp32, that a resumed run's checkpoint folder is not empty (resuming is the
point) and that litdata's loader has a length (litdata gives each worker its own chunks), and trips over a torch
deprecation inside its own code. Everything else is shown; warnings name their source relative to the installed
packages (``lightning/pytorch/loops/fit_loop.py:321``), not by its full site-packages path. Records marked
``file_only`` (the model's layer table) and Lightning's notes on the checkpoints it restores go to the run's log but
not to the console (:class:`FileOnly`).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode

from datamodules.errors import DamagedDataError, DataDownloadError
from datamodules.optional import MissingExtraError
from lightning_modules.classifier import NonFiniteLossError
from lightning_modules.run_directory import RunLockedError
from resattn.checkpoints import CheckpointError

KNOWN_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Precision .* is not supported by the model summary",
    r"Checkpoint directory .* exists and is not empty",
    r"Your `IterableDataset` has `__len__` defined",
)


# Errors that report a bad input in words (what was wrong, what is accepted), raised on purpose by the project.
BAD_INPUT = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    CheckpointError,
    DataDownloadError,
    DamagedDataError,
    MissingExtraError,
    NonFiniteLossError,
    RunLockedError,
)


# How the rank-zero messages of Lightning that say nothing about the run begin.
CHATTER = (
    "💡 Tip",
    "Trainer already configured with model summary callbacks",  # conf/callbacks brings its own ModelSummary
)


class DropChatter(logging.Filter):
    """Drops the records of Lightning's rank-zero logger that begin as one of :data:`CHATTER` (attached to that
    logger by conf/hydra/job_logging)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(CHATTER)


# How Lightning's messages begin that repeat, with a checkpoint's full path, what the run says itself ("Resuming
# from ...", the final summary's best checkpoint): the run's log keeps them, the console does not.
FILE_ONLY = (
    "Restoring states from the checkpoint path at ",
    "Restored all states from the checkpoint at ",
    "Loaded model weights from the checkpoint at ",
)


class FileOnly(logging.Filter):
    """Drops the records logged with ``extra={"file_only": True}`` and those that begin as one of
    :data:`FILE_ONLY` (attached to the console handler by conf/hydra/job_logging: the run's log file still gets
    them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False) and not record.getMessage().startswith(FILE_ONLY)


def source_of(filename: str) -> str:
    """``filename`` relative to the import path it lies under (``lightning/pytorch/loops/fit_loop.py`` rather than
    its full site-packages path); other files as given."""
    path = Path(filename)
    roots = sorted((Path(entry) for entry in sys.path if entry), key=lambda root: len(root.parts), reverse=True)
    return next((str(path.relative_to(root)) for root in roots if path.is_relative_to(root)), filename)


def format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """A warning on one line: its message, then its category and source (short, without the source line)."""
    return f"{message} ({category.__name__} at {source_of(filename)}:{lineno})\n"


def quiet_known_warnings() -> None:
    """Ignore the warnings in :data:`KNOWN_WARNINGS` and show the others as :func:`format_warning` does (this
    process only)."""
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    warnings.formatwarning = format_warning


@contextmanager
def bad_input_reported() -> Iterator[None]:
    """In a single run, end on a bad input (missing or damaged data or checkpoints, a wrong size or name, a run
    directory in use, a NaN loss) with its message alone, exit status 1, instead of a traceback: the message says what
    was wrong and what is accepted. The traceback stays in the run's log when the run got that far
    (:meth:`~lightning_modules.run_directory.RunDirectory.logged` names it), and ``HYDRA_FULL_ERROR=1`` prints it.
    Other errors (bugs), and every error of a multirun job (Hydra runs the remaining jobs, then reports the failure),
    pass through unchanged."""
    try:
        yield
    except Exception as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ is not None else err
        multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
        if not isinstance(cause, BAD_INPUT) or multirun or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log_file = getattr(err, "traceback_log", None) or getattr(cause, "traceback_log", None)
        where = f"the traceback is in {log_file}; " if log_file else ""
        raise SystemExit(f"error: {cause}\n({where}HYDRA_FULL_ERROR=1 prints the traceback here)") from None
