"""Stopping a training run without losing a step: SIGTERM (``kill``, a scheduler's preemption or time limit, ``docker
stop``) and Ctrl-C end it at the end of the current training step, where :class:`~lightning_modules.callbacks.
LastCheckpoint` writes last.ckpt, and the command exits with the signal's status (143, 130), not with success.

Lightning already turns SIGTERM into a stop at a step boundary (``SIGTERMException``, a ``SystemExit`` with status 0);
Ctrl-C, which Python raises as ``KeyboardInterrupt`` wherever the program is (inside an optimiser update too), is
routed the same way: the first press becomes a SIGTERM to this process, a second one interrupts at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from lightning_modules.run_report import shown
from resattn.checkpoints import CheckpointError, read_checkpoint

log = logging.getLogger(__name__)


@dataclass
class StopRequest:
    """The signal that stopped the run (SIGTERM unless Ctrl-C was pressed)."""

    signal: signal.Signals = signal.SIGTERM

    @property
    def exit_status(self) -> int:
        return 128 + int(self.signal)


# The pid of the process that turns Ctrl-C into a stop; the DDP ranks it starts (Lightning's launcher re-runs the
# script with its environment) see another pid here and leave the stop to it.
OWNER = "RESATTN_CTRL_C_OWNER"


@contextmanager
def ctrl_c_stops_at_a_step() -> Iterator[StopRequest]:
    """During the block, the first Ctrl-C asks for a stop as SIGTERM does (once the trainer handles SIGTERM; before,
    it interrupts as usual); a second Ctrl-C interrupts at once. A DDP rank started by this process ignores the
    first Ctrl-C (the terminal sends it to every rank): the first process stops it, as Lightning does on SIGTERM.
    Nothing changes outside the main thread or where Ctrl-C is ignored (a background job of a script)."""
    request = StopRequest()
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is signal.SIG_IGN:
        yield request
        return
    owner = os.environ.get(OWNER)
    started_by_owner = owner is not None and owner != str(os.getpid())

    def first_ctrl_c(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, previous)  # the next press interrupts at once
        if started_by_owner:
            request.signal = signal.SIGINT
            return
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.SIG_IGN, None):  # no trainer listening yet
            raise KeyboardInterrupt
        request.signal = signal.SIGINT
        log.warning("Ctrl-C: stopping at the end of this training step (press Ctrl-C again to stop at once)")
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGINT, first_ctrl_c)
    if not started_by_owner:
        os.environ[OWNER] = str(os.getpid())
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)
        if not started_by_owner:
            os.environ.pop(OWNER, None)


def stopped_message(request: StopRequest, step: int, last_checkpoint: Path | None) -> str:
    """What a stopped run tells its user: where it stopped, what last.ckpt holds, how to continue."""
    name = "Ctrl-C" if request.signal == signal.SIGINT else request.signal.name
    if last_checkpoint is None:
        return f"Stopped by {name} at step {step}; no last.ckpt is written (callbacks.last_checkpoint is off)."
    try:
        saved = read_checkpoint(last_checkpoint, lazy=True).get("global_step") if last_checkpoint.is_file() else None
    except CheckpointError:
        saved = None
    if saved is None:
        return f"Stopped by {name} at step {step}, before a last.ckpt was written: a rerun starts over."
    lost = f" (the {step - saved} steps after it will be trained again)" if saved < step else ""
    return (
        f"Stopped by {name} at step {step}; {shown(last_checkpoint)} holds step {saved}{lost}. "
        "Rerun the same command to resume."
    )
