"""What a training run says when it ends (or is found finished): where its curves and checkpoints are, what it
scored, and the eval.py command for it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


# Data options that change how the data are loaded or trained on, not which images the test split holds.
TRAINING_ONLY_DATA_KEYS = (
    "batch_size",
    "eval_batch_size",
    "num_workers",
    "pin_memory",
    "persistent_workers",
    "max_train_samples",
    "max_eval_samples",
    "label_noise",
    "label_noise_seed",
    "gpu_resident",
    "download",
)


def eval_command(best: str | None, data_choice: str | None, overrides: list[str]) -> str | None:
    """The eval.py command for this run's best checkpoint on the same data (its whole test split)."""
    if not best:
        return None
    data = [f"data={data_choice}"] if data_choice else []
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith("data.") and key.removeprefix("data.") not in TRAINING_ONLY_DATA_KEYS:
            data.append(override)
    return " ".join(["python eval.py", f"'ckpt_path={shown(best)}'", *dict.fromkeys(data)])


def shown(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it (as the user typed the command)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def length_text(length: Mapping[str, Any]) -> str:
    """The limits that end the run, e.g. ``trainer.max_epochs=2, trainer.max_steps=160000``."""
    limits = [f"trainer.{key}={value}" for key, value in sorted(length.items()) if value not in (None, -1)]
    return ", ".join(limits) or "no step or epoch limit"


def metrics_text(metrics: Mapping[str, float]) -> str:
    """``test/acc1=0.9219, test/acc5=1.0000`` (sorted, four decimals)."""
    return ", ".join(f"{key}={value:.4f}" for key, value in sorted(metrics.items()))


def report_run(run: Path, metrics: Mapping[str, float], best: str | None, command: str | None) -> None:
    """Say where the run, its curves and checkpoints are, what it scored and how to evaluate it."""
    lines = [f"Run directory: {shown(run)}"]
    csv_logs = sorted(run.glob("csv/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
    if csv_logs:
        earlier = f" (and {len(csv_logs) - 1} earlier, one per restart)" if len(csv_logs) > 1 else ""
        lines.append(f"  curves: {csv_logs[-1].relative_to(run)}{earlier}")
    wandb_runs = sorted(run.glob("wandb/offline-run-*"))
    if wandb_runs:
        upload = f"wandb sync {shown(run / 'wandb')}/offline-run-*"
        lines.append(f"  W&B offline: {wandb_runs[-1].relative_to(run)} (upload: {upload})")
    if best:
        where = Path(best).relative_to(run) if Path(best).is_relative_to(run) else best
        lines.append(f"  best checkpoint (val/acc1): {where}")
    if (run / "checkpoints" / "last.ckpt").is_file():
        lines.append("  last checkpoint: checkpoints/last.ckpt (rerunning the command resumes from it)")
    results = {k: v for k, v in metrics.items() if k.startswith(("test/", "val/acc1_best"))}
    if results:
        lines.append(f"  results: {metrics_text(results)}")
    if command:
        lines.append(f"Evaluate it: {command}")
    log.info("\n".join(lines))
