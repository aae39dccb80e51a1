"""Exact resumption: Lightning's loop state fix-up and the random number generator states.

Work around Lightning's resume of iteration-based runs (``max_steps`` set) from an end-of-epoch checkpoint.

With ``max_steps != -1`` Lightning (2.6) always treats a restored fit loop as restarting mid-epoch. A
checkpoint written after the last batch of an epoch (e.g. at validation end) then replays that finished
epoch with its batch counters still at the end, and every later epoch runs zero batches: training never
continues. The paper's schedules are iteration-based (160k iterations), so we mark such an epoch as
finished before Lightning restores its loops; checkpoints saved mid-epoch are left untouched.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

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


def rng_states() -> dict[str, Any]:
    """The CPU random streams (torch, numpy, python) as checkpoint-safe tensors and lists.

    Saved with every checkpoint so that a resumed run draws the same augmentations, Mixup factors and
    dropout masks as the uninterrupted one (with ``num_workers=0``; workers reseed per epoch).
    """
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` saved."""
    torch.set_rng_state(states["torch"])
    kind, keys, *rest = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
