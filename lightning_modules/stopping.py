"""Stopping a training run without losing a step: SIGTERM (``kill``, a scheduler's preemption or time limit, ``docker
stop``, torchrun passing a SIGTERM on) and Ctrl-C end it right after a training step, where
:class:`~lightning_modules.callbacks.LastCheckpoint` writes last.ckpt, and the command exits with the signal's status
(143, 130), not with success.

The signal handlers only note the request (``_stop_signal``): Ctrl-C, which Python would raise as
``KeyboardInterrupt`` wherever the program is (inside an optimiser update too), and, from the start of training on,
SIGTERM, whose Lightning handler broadcasts from inside the signal handler; under DDP that broadcast interleaves with
the ranks' own collectives (gloo: "Received data size doesn't match expected size", then a crash; NCCL can hang).
After each optimiser step the ranks agree whether any of them was asked to stop (:func:`stop_requested`); if so,
they all write last.ckpt and raise Lightning's ``SIGTERMException`` at that same step. Nothing collective runs
inside a signal handler.

How a training session ended (:class:`SessionEnd`: finished, stopped or failed) is what the run directory's record,
the W&B run's exit code and the console say: a stopped run resumes, a failed one resumes once its cause is fixed.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import lightning as L
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from lightning_modules.run_report import shown
from resattn.checkpoints import CheckpointError, read_checkpoint

log = logging.getLogger(__name__)

_stop_signal: signal.Signals | None = None  # the first signal that asked this process to stop after a step


def _note_stop(signum: int) -> bool:
    """Note a stop request; whether it is the first."""
    global _stop_signal
    if _stop_signal is not None:
        return False
    _stop_signal = signal.Signals(signum)
    return True


def stop_requested(trainer: L.Trainer) -> bool:
    """Whether this run is asked to stop (SIGTERM or Ctrl-C); under DDP, whether any rank is, decided by all."""
    asked = trainer.received_sigterm or _stop_signal is not None
    if trainer.world_size == 1:
        return asked
    return trainer.strategy.reduce_boolean_decision(asked, all=False)


def exit_status() -> int:
    """The status of a stopped command: 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + int(_stop_signal or signal.SIGTERM)


@contextmanager
def ctrl_c_stops_at_a_step() -> Iterator[None]:
    """During the block, the first Ctrl-C asks for a stop after the current training step (as SIGTERM does); a
    second one interrupts at once. Nothing changes outside the main thread or where Ctrl-C is ignored (a background
    job of a script). The block starts with no stop request noted."""
    global _stop_signal
    _stop_signal = None
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield
        return

    def first_ctrl_c(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, previous)  # the next press interrupts at once
        _note_stop(signum)
        log.warning("Ctrl-C: stopping after the current training step (press Ctrl-C again to stop at once)")

    signal.signal(signal.SIGINT, first_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def sigterm_stops_at_a_step(trainer: L.Trainer) -> None:
    """From now until Lightning restores its signal handlers at the end of fit, SIGTERM asks for a stop after the
    current training step instead of running Lightning's handler. Rank zero of a run whose ranks Lightning started
    passes the signal on to them, as Lightning's handler does (torchrun and SLURM signal every rank themselves)."""
    if threading.current_thread() is not threading.main_thread():
        return
    launcher = trainer.strategy.launcher

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if not _note_stop(signum):
            return  # already stopping
        log.warning("SIGTERM: stopping after the current training step")
        if isinstance(launcher, _SubprocessScriptLauncher):
            launcher.kill(signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def saved_step(last_checkpoint: Path) -> int | None:
    """The step last.ckpt holds (None when there is none, or it cannot be read)."""
    try:
        return read_checkpoint(last_checkpoint, lazy=True).get("global_step") if last_checkpoint.is_file() else None
    except CheckpointError:
        return None


def stopped_message(step: int, last_checkpoint: Path | None) -> str:
    """What a stopped run tells its user: where it stopped, what last.ckpt holds, how to continue."""
    name = "Ctrl-C" if _stop_signal == signal.SIGINT else "SIGTERM"
    if last_checkpoint is None:
        return f"Stopped by {name} at step {step}; no last.ckpt is written (callbacks.last_checkpoint is off)."
    saved = saved_step(last_checkpoint)
    if saved is None:
        return f"Stopped by {name} at step {step}, before a last.ckpt was written: a rerun starts over."
    lost = f" (the {step - saved} steps after it will be trained again)" if saved < step else ""
    return (
        f"Stopped by {name} at step {step}; {shown(last_checkpoint)} holds step {saved}{lost}. "
        "Rerun the same command to resume."
    )


@dataclass(frozen=True)
class SessionEnd:
    """How a training session ended: ``finished``, ``stopped`` (SIGTERM, Ctrl-C; it resumes) or ``failed`` (an
    error, ``message`` its one line), at ``step``; ``exit_code`` is the one W&B records (non-zero: not finished)."""

    state: str
    step: int
    message: str | None = None
    exit_code: int = 0


def one_line(error: BaseException) -> str:
    """An error as one line: its type and first line, or the original error's last line where a DataLoader worker
    relayed it (torch puts the worker's traceback into the message)."""
    text = str(error).strip()
    if text.startswith("Caught ") and "Original Traceback" in text:
        return text.splitlines()[-1]
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def session_end(error: BaseException | None, step: int) -> SessionEnd:
    """How a session that raised ``error`` (None: that returned) at ``step`` ended. A stop leaves as ``SystemExit``
    with the signal's status (our stop after a step) or as Lightning's exit after a ``KeyboardInterrupt`` (a second
    Ctrl-C, or Ctrl-C while testing); any other error is a failure."""
    if error is None:
        return SessionEnd("finished", step)
    if isinstance(error, (SystemExit, KeyboardInterrupt)):
        code = getattr(error, "code", None)
        status = code if isinstance(code, int) and code > 128 else 128 + signal.SIGINT
        return SessionEnd("stopped", step, exit_code=status)
    return SessionEnd("failed", step, one_line(error), exit_code=1)


def failed_message(end: SessionEnd, last_checkpoint: Path | None, recorded: list[str]) -> str:
    """What a failed run tells its user before its error: the step, where the failure is recorded, and what a rerun
    resumes from once the cause is fixed."""
    saved = saved_step(last_checkpoint) if last_checkpoint is not None else None
    resume = (
        f"{shown(last_checkpoint)} holds step {saved}: rerun the same command to resume from it once the cause is fixed"
        if saved is not None
        else "no last.ckpt was written: a rerun starts over"
    )
    return f"The run failed at step {end.step} (recorded as failed in {' and '.join(recorded)}); {resume}."
