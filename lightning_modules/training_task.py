"""The train task behind ``train.py`` (a thin Hydra entry point): whether the run directory's run is finished, to be
resumed or new; the datamodule, LightningModule, callbacks, loggers and Trainer from the composed config; fit, test
and the run's report (docs/design.md §2). Nothing here knows how many devices there are (the Trainer owns devices,
precision and DDP).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig, OmegaConf

from lightning_modules.callbacks import LastCheckpoint
from lightning_modules.checkpoint_loading import check_fits
from lightning_modules.console import quiet_known_warnings
from lightning_modules.cpu_threads import CpuThreads
from lightning_modules.run_directory import RunDirectory
from lightning_modules.run_report import eval_command, length_text, report_run, shown
from lightning_modules.stopping import (
    SessionEnd,
    ctrl_c_stops_at_a_step,
    exit_status,
    failed_message,
    session_end,
    stopped_message,
)
from lightning_modules.task_setup import (
    finish_wandb,
    hydra_job,
    instantiate_dict,
    metrics_as_floats,
    prepare_datamodule,
    uses_wandb,
)
from lightning_modules.wandb_runs import training_run, wandb_config
from resattn.checkpoints import CheckpointError, read_checkpoint

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train (resuming the run directory's last.ckpt), test, and return the metrics.

    The process that owns the run directory (rank zero) locks it first, logs into its ``train.log`` and saves the
    config there (:func:`save_run_config`); other DDP ranks (started by Lightning, which re-runs the script) only
    train.
    """
    quiet_known_warnings()
    if rank_zero_only.rank != 0:
        return _train(cfg, None)
    run = RunDirectory(cfg.paths.output_dir)
    with run.locked(), run.logged("train.log"):
        return _train(cfg, run)


def run_length(trainer: DictConfig) -> dict[str, int | None]:
    """``trainer.max_steps`` and ``trainer.max_epochs``, checked: whole numbers, -1 or null (no limit). They decide
    whether a run has finished, so a bad value is refused before the run directory's record is touched."""
    length = {"max_steps": trainer.get("max_steps"), "max_epochs": trainer.get("max_epochs")}
    for key, value in length.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < -1):
            raise ValueError(
                f"trainer.{key}={value!r} is not a run length: give a whole number (e.g. "
                f"trainer.{key}=60), or -1 or null for no limit"
            )
    return length


def check_not_shortened(path: Path, checkpoint: Mapping[str, Any], length: Mapping[str, int | None]) -> None:
    """Refuse to resume a checkpoint that has trained past the run's length: training cannot be undone."""
    epochs = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    done = {"max_epochs": epochs.get("processed"), "max_steps": checkpoint.get("global_step")}  # whole epochs
    for key, limit in length.items():
        if limit not in (None, -1) and done[key] is not None and done[key] > limit:
            unit = "epochs" if key == "max_epochs" else "steps"
            raise ValueError(
                f"{shown(path)} has trained {done[key]} {unit}, more than trainer.{key}={limit}: a run cannot be made "
                f"shorter. Give trainer.{key}={done[key]} or more, evaluate the checkpoint with eval.py, or start "
                "over with auto_resume=false"
            )


def resume_checkpoint(cfg: DictConfig) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint ``fit`` resumes from, read lazily (tensors mapped, not loaded) to check it first:
    ``ckpt_path`` if given, else this run's last.ckpt if any (``auto_resume``)."""
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path} does not exist; give an existing .ckpt or null")
        return path, read_checkpoint(path, lazy=True)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if not (cfg.get("auto_resume", True) and last.is_file()):
        return None
    try:
        checkpoint = read_checkpoint(last, lazy=True)
    except CheckpointError as err:
        others = sorted(str(p) for p in last.parent.glob("*.ckpt") if p != last)
        earlier = f"one of its other checkpoints ({', '.join(others)})" if others else "another checkpoint"
        raise CheckpointError(
            f"cannot resume this run: {err}. To continue, resume from {earlier} with ckpt_path=<file>, or start "
            f"this run over with auto_resume=false (its last.ckpt is then replaced)"
        ) from None
    return last, checkpoint


def save_run_config(run: RunDirectory, cfg: DictConfig, resume: tuple[Path, dict[str, Any]] | None) -> None:
    """Save this command's config in the run directory; when it resumes the run under a different config, say which
    keys changed and add them to the run's record first. Changing the keys that continue a run (those left out of
    the run directory's name: the schedule's length, devices, ...) is reported; any other change is warned about,
    since the run then mixes two configs (an edited YAML, a changed default)."""
    hydra_cfg, overrides, _ = hydra_job()
    if resume is not None and (before := run.saved_config()) is not None:
        changes = config_changes(before, cfg)
        if changes:
            continuing = set(hydra_cfg.job.config.override_dirname.exclude_keys) if hydra_cfg is not None else set()
            listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items())
            if changes.keys() <= continuing:
                log.info("Continuing this run with %s", listed)
            else:
                log.warning(
                    "Resuming under a config that differs from the one this run was trained with so far: %s. The "
                    "run continues with the new values (run.json's config_changes keeps the old ones); to train "
                    "under one config, restore the old values, or start over with auto_resume=false.",
                    listed,
                )
            run.note_config_changes(changes, resume[1].get("global_step"))
    run.save_config(cfg, hydra_cfg, overrides)


def note_precision(run: RunDirectory, precision: str, step: int) -> None:
    """Record the precision this session trains in, and warn when the run trained in another one before it."""
    before = run.note_precision(precision, step)
    if before is not None:
        log.warning(
            "This run trained in %s precision until step %d and continues in %s: trainer.precision resolves per "
            "machine (bf16-mixed only where the hardware computes bf16 natively), and this one differs. run.json's "
            "precision keeps both. To train in one precision, resume with trainer.precision=%s (slower where it is "
            "emulated), or resume on a machine like the first.",
            before,
            step,
            precision,
            before,
        )


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists are kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def config_changes(before: DictConfig, now: DictConfig) -> dict[str, tuple[Any, Any]]:
    """``{key: (before, now)}`` for every flat key whose value differs between two configs (interpolations
    compared as written; a key only one of them has is ``None`` in the other)."""
    old = flatten(OmegaConf.to_container(before, resolve=False))
    new = flatten(OmegaConf.to_container(now, resolve=False))
    return {
        key: (old.get(key), new.get(key)) for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)
    }


def log_run_config(cfg: DictConfig, model: L.LightningModule, loggers: list[Logger]) -> None:
    """Send the resolved config and the model's size and summary to every logger: W&B gets the config nested (keys it
    can group and filter by: :func:`~lightning_modules.wandb_runs.wandb_config`), the others flat keys."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    sizes = {
        "model/params_total": sum(p.numel() for p in model.parameters()),
        "model/params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_hyperparams({**wandb_config(cfg), **sizes})
            logger.experiment.summary["model/summary"] = str(ModelSummary(model, max_depth=2))
        else:
            logger.log_hyperparams({**flat, **sizes})


def fit_and_test(
    trainer: L.Trainer,
    model: L.LightningModule,
    datamodule: L.LightningDataModule,
    ckpt_path: str | None,
    test: bool,
    stop_on_ctrl_c: bool,
) -> tuple[dict[str, float], str | None] | None:
    """Fit (from ``ckpt_path``), then test the best checkpoint on val/acc1 when ``test``: the metrics and that
    checkpoint, or None when fit did not finish. With ``stop_on_ctrl_c`` the first Ctrl-C during fit stops it after
    the current step (:mod:`lightning_modules.stopping`); while testing, Ctrl-C interrupts at once (a rerun tests
    again)."""
    with ctrl_c_stops_at_a_step() if stop_on_ctrl_c else nullcontext():
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if trainer.state.status != TrainerStatus.FINISHED:
        return None
    metrics = metrics_as_floats(trainer.callback_metrics)
    if "val/acc1_best" not in metrics and model.best_val_acc1() is not None:  # fit had nothing left to do
        metrics["val/acc1_best"] = model.best_val_acc1()
    best = next(
        (cb.best_model_path for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.best_model_path),
        None,
    )
    if test:
        if best is None:
            log.warning("No best checkpoint on val/acc1; testing the final weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)  # report_run
        metrics.update(metrics_as_floats(trainer.callback_metrics))
    return metrics, best


def _train(cfg: DictConfig, run: RunDirectory | None) -> dict[str, float]:
    length = run_length(cfg.trainer)
    resume = resume_checkpoint(cfg)
    own_last = resume is not None and not cfg.get("ckpt_path")
    _, overrides, data_choice = hydra_job()
    continues_its_directory = not cfg.get("ckpt_path") and cfg.get("auto_resume", True)  # also without last.ckpt
    if run is not None and continues_its_directory:
        finished = run.finished(length)
        if finished and (finished.get("tested") or not cfg.get("test", True)):
            log.info(
                "This run already finished (%s, at %s): not training it again. To train longer raise "
                "trainer.max_epochs or trainer.max_steps; to start over set auto_resume=false.",
                length_text(length),
                finished.get("at"),
            )
            best = finished.get("best_checkpoint")
            report_run(run.path, finished["metrics"], best, eval_command(best, data_choice, overrides))
            return dict(finished["metrics"])  # its saved config stays the one it was trained with
    if resume is not None:
        check_not_shortened(resume[0], resume[1], length)
    if run is not None:
        save_run_config(run, cfg, resume if own_last else None)

    L.seed_everything(cfg.seed, workers=True)
    datamodule = prepare_datamodule(cfg)
    model = instantiate(cfg.module, num_classes=datamodule.num_classes)
    if resume is not None:
        check_fits(resume[0], resume[1], model)
    wandb = training_run(cfg, run, resuming=own_last) if run is not None and uses_wandb(cfg.get("logger")) else None
    callbacks = [*instantiate_dict(cfg.get("callbacks"), Callback), CpuThreads(cfg.get("cpu_threads"))]
    loggers = instantiate_dict(cfg.get("logger"), Logger, wandb)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    last = next((cb.path for cb in callbacks if isinstance(cb, LastCheckpoint)), None)
    end = None
    try:
        if trainer.is_global_zero:
            log_run_config(cfg, model, loggers)
        if run is not None:
            run.forget_finished()
            run.note_session("running")
            note_precision(run, str(trainer.precision), int(resume[1].get("global_step", 0)) if resume else 0)
        ckpt_path = str(resume[0]) if resume is not None else None
        if own_last:
            log.info("Resuming from %s (auto_resume; set auto_resume=false to start over)", shown(ckpt_path))
        del resume  # the lazily mapped checkpoint: Lightning reads the file itself
        try:
            outcome = fit_and_test(
                trainer, model, datamodule, ckpt_path, test=cfg.get("test", True), stop_on_ctrl_c=last is not None
            )
        except SIGTERMException:  # SIGTERM or Ctrl-C, after a step: say so and exit with the signal's status
            if trainer.is_global_zero:
                log.warning(stopped_message(trainer.global_step, last))
            raise SystemExit(exit_status()) from None
        if outcome is None:
            end = SessionEnd("stopped", trainer.global_step)
            return metrics_as_floats(trainer.callback_metrics)
        metrics, best = outcome
    except BaseException as err:
        end = session_end(err, trainer.global_step)
        raise
    finally:
        end = end or session_end(None, trainer.global_step)
        finish_wandb(loggers, end)
        if run is not None:
            run.note_session(end.state, step=end.step, message=end.message)
            if end.state == "failed":
                recorded = ["run.json", *(["its W&B run"] if uses_wandb(cfg.get("logger")) else [])]
                log.error(failed_message(end, last, recorded))
    if run is not None:
        tested = bool(cfg.get("test", True))
        run.mark_finished(length, metrics, best_checkpoint=best, tested=tested, precision=str(trainer.precision))
        report_run(run.path, metrics, best, eval_command(best, data_choice, overrides))
    return metrics
