"""Optimisers and learning-rate schedules from plain dicts (so checkpoints hold no config objects).

Optimiser dict: ``{"name": "sgd" | "adamw" | "adam", "lr": ..., ...}`` with the optimiser's own
keyword arguments, plus ``no_weight_decay_on_norm_and_bias`` (default False, as in the paper) and
``mask_weight_decay`` (the weight decay of the attention modules' soft-mask branches; None: the same as every
other weight, as in the paper; ``conf/optimizer/*.yaml`` default to 0, docs/paper.md §7.18).

Scheduler dict: ``{"name": "multistep" | "cosine" | "none", "interval": "step" | "epoch", ...}``.
Milestones are fractions of the run (floats in (0, 1)) or counts (integers); the warm-up is a count. With
``interval: step`` they count optimiser steps, so the paper's iteration schedule (/10 at 64k and 96k of 160k
iterations, docs/paper.md §5.1) is exact whatever the epoch length: as fractions (0.4, 0.6), the default, it is the
paper's at the paper's length and anneals any shorter run too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
}
SCHEDULERS = ("multistep", "cosine", "none")
INTERVALS = ("step", "epoch")


# The parameters of an attention module's soft-mask branch (resattn's module names: stages.<i>.attention.<j>.mask.).
MASK_PARAMETER = re.compile(r"(^|\.)attention\.\d+\.mask\.")


def _parameter_groups(
    model: nn.Module, weight_decay: float, exclude_norm_and_bias: bool, mask_weight_decay: float | None
) -> list[dict[str, Any]]:
    """One group per weight decay: everything at ``weight_decay``, norm scales and biases at 0 when excluded, and
    the mask branches' weights at ``mask_weight_decay`` when given (their norms and biases follow the exclusion). A
    network without attention modules (the ResNet and CNN baselines) has no mask branch: the option changes nothing."""
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    masks = [p for name, p in named if mask_weight_decay is not None and MASK_PARAMETER.search(name)]
    mask_ids = {id(p) for p in masks}
    params = [p for _, p in named if id(p) not in mask_ids]
    if exclude_norm_and_bias:
        no_decay = [p for _, p in named if p.ndim <= 1]
        groups = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        masks = [p for p in masks if p.ndim > 1]
    else:
        groups = [{"params": params, "weight_decay": weight_decay}]
    if masks:
        groups.append({"params": masks, "weight_decay": mask_weight_decay})
    return groups


def build_optimizer(model: nn.Module, settings: Mapping[str, Any]) -> torch.optim.Optimizer:
    """Build the optimiser named in ``settings["name"]`` over the model's trainable parameters."""
    kwargs = dict(settings)
    name = kwargs.pop("name", "sgd")
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; accepted: {sorted(OPTIMIZERS)}")
    exclude = bool(kwargs.pop("no_weight_decay_on_norm_and_bias", False))
    weight_decay = float(kwargs.pop("weight_decay", 0.0))
    mask_weight_decay = kwargs.pop("mask_weight_decay", None)
    mask_weight_decay = None if mask_weight_decay is None else float(mask_weight_decay)
    if kwargs.pop("fused", False) and any(p.is_cuda for p in model.parameters()):
        kwargs["fused"] = True
    return OPTIMIZERS[name](_parameter_groups(model, weight_decay, exclude, mask_weight_decay), **kwargs)


RunLength = Callable[[], tuple[int, int]]


def _positions(values: Sequence[float], total: int, name: str) -> list[int]:
    """Steps (or epochs) of a run of ``total``: a float in (0, 1) is that fraction of the run, an int >= 0 a count."""
    positions = []
    for value in values:
        if isinstance(value, float) and 0.0 < value < 1.0:
            positions.append(max(1, round(value * total)))
        elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            positions.append(value)
        else:
            raise ValueError(
                f"scheduler.{name}: {value!r} is neither a fraction of the run (a float between 0 and 1, e.g. 0.4) "
                "nor a number of steps (an integer >= 0, e.g. 64000)"
            )
    return positions


def _lr_factor(
    length: RunLength, per_epoch: bool, warmup: int, shape: Callable[[int, int, int], float]
) -> Callable[[int], float]:
    """LR factor of a schedule: ``shape(step, warmup, total)`` times a linear warm-up over the first ``warmup``
    steps (or epochs). The two multiply, so a run shorter than its warm-up still anneals at its milestones.

    The run length is asked for only once training runs (the factor at step 0 does not depend on it), so that
    building the optimiser does not load the training data before a checkpoint (and the loader's position in its
    epoch) is restored.
    """
    total: list[int] = []

    def factor(step: int) -> float:
        ramp = (step + 1) / warmup if step < warmup else 1.0
        if step == 0:
            return ramp
        if not total:
            steps, steps_per_epoch = length()
            total.append(max(1, steps // max(1, steps_per_epoch) if per_epoch else steps))
        return ramp * shape(step, warmup, total[0])

    return factor


def _multistep(milestones: Sequence[float], gamma: float) -> Callable[[int, int, int], float]:
    """``gamma`` to the number of milestones passed (the paper's /10 at 64k and 96k of 160k steps: 0.4 and 0.6)."""

    positions: dict[int, list[int]] = {}  # by run length

    def shape(step: int, warmup: int, total: int) -> float:
        if total not in positions:
            positions[total] = _positions(milestones, total, "milestones")
        return gamma ** sum(step >= m for m in positions[total])

    return shape


def _cosine(min_ratio: float) -> Callable[[int, int, int], float]:
    """Cosine from 1 after the warm-up to ``min_ratio`` at the end of the run."""

    def shape(step: int, warmup: int, total: int) -> float:
        progress = min(1.0, max(0, step - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: Mapping[str, Any] | None, length: RunLength
) -> dict[str, Any] | None:
    """Lightning ``lr_scheduler`` config for ``settings``; ``None`` for ``name: none``.

    ``length()`` returns ``(total optimiser steps, steps per epoch)`` of the run; it sizes the cosine and the
    milestones given as fractions of the run, and is called lazily (see :func:`_lr_factor`).
    """
    kwargs = dict(settings or {"name": "none"})
    name = kwargs.pop("name", "none")
    interval = kwargs.pop("interval", "step")
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; accepted: {list(SCHEDULERS)}")
    if interval not in INTERVALS:
        raise ValueError(f"unknown scheduler interval {interval!r}; accepted: {list(INTERVALS)}")
    if name == "none":
        return None
    per_epoch = interval == "epoch"
    warmup = kwargs.pop("warmup_epochs" if per_epoch else "warmup_steps", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        unit = "epochs" if per_epoch else "steps"
        raise ValueError(f"scheduler.warmup_{unit}={warmup!r}: give a whole number of {unit} >= 0")
    for leftover in ("warmup_steps", "warmup_epochs"):
        kwargs.pop(leftover, None)
    if name == "multistep":
        milestones = list(kwargs.pop("milestones"))
        _positions(milestones, 1, "milestones")  # a bad value is reported now, not once training runs
        shape = _multistep(milestones, float(kwargs.pop("gamma", 0.1)))
    else:
        shape = _cosine(float(kwargs.pop("min_lr_ratio", 0.0)))
    if kwargs:
        raise ValueError(f"unexpected settings for scheduler {name!r}: {sorted(kwargs)}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(length, per_epoch, warmup, shape))
    return {"scheduler": scheduler, "interval": interval, "frequency": 1}
