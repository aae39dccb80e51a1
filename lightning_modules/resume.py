"""Work around Lightning's resume of iteration-based runs (``max_steps`` set) from an end-of-epoch checkpoint.

With ``max_steps != -1`` Lightning (2.6) always treats a restored fit loop as restarting mid-epoch. A
checkpoint written after the last batch of an epoch (e.g. at validation end) then replays that finished
epoch with its batch counters still at the end, and every later epoch runs zero batches: training never
continues. The paper's schedules are iteration-based (160k iterations), so we mark such an epoch as
finished before Lightning restores its loops; checkpoints saved mid-epoch are left untouched.
"""

from __future__ import annotations

from typing import Any

_COUNTERS = ("ready", "started", "processed", "completed")


def close_finished_epoch(checkpoint: dict[str, Any]) -> bool:
    """Mark the epoch of an end-of-epoch checkpoint as completed and reset its batch counters.

    Returns whether the checkpoint was changed.
    """
    fit = checkpoint.get("loops", {}).get("fit_loop")
    if not fit:
        return False
    batches = fit.get("epoch_loop.batch_progress", {})
    epochs = fit.get("epoch_progress", {})
    if not batches.get("is_last_batch") or not epochs:
        return False
    current = batches["current"]
    if current["completed"] != current["ready"]:  # stopped inside the last batch: let Lightning handle it
        return False
    for scope in ("total", "current"):
        epochs[scope]["completed"] = epochs[scope]["processed"] = epochs[scope]["started"]
    batches["current"] = dict.fromkeys(_COUNTERS, 0)
    batches["is_last_batch"] = False
    return True
