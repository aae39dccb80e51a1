"""The train and eval tasks behind ``train.py`` / ``eval.py`` (thin Hydra entry points).

Everything here takes a composed Hydra config; nothing knows how many devices there are (the Trainer
owns devices, precision and DDP).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.trainer.states import TrainerStatus
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig, OmegaConf, open_dict

from datamodules.base import ImageDataModule
from lightning_modules.callbacks import LastCheckpoint
from lightning_modules.checkpoint_loading import check_fits, load_classifier, load_pretrained
from lightning_modules.console import quiet_known_warnings
from lightning_modules.cpu_threads import CpuThreads
from lightning_modules.eval_outputs import images_to_predict, predict_folder, write_confusion_png, write_per_class_csv
from lightning_modules.run_directory import RunDirectory
from lightning_modules.run_report import eval_command, length_text, metrics_text, report_run, shown
from lightning_modules.stopping import (
    SessionEnd,
    ctrl_c_stops_at_a_step,
    exit_status,
    failed_message,
    session_end,
    stopped_message,
)
from lightning_modules.wandb_runs import evaluation_run, training_run, wandb_config
from resattn.checkpoints import CheckpointError, read_checkpoint
from resattn.pretrained import available as pretrained_weights
from resattn.pretrained import find as find_pretrained

log = logging.getLogger(__name__)


def _entries(section: DictConfig | None) -> dict[str, DictConfig]:
    """The entries of a callbacks/logger section that have a ``_target_``."""
    return {name: entry for name, entry in (section or {}).items() if entry is not None and "_target_" in entry}


def uses_wandb(section: DictConfig | None) -> bool:
    return any(issubclass(get_class(entry._target_), WandbLogger) for entry in _entries(section).values())


def instantiate_dict(section: DictConfig | None, kind: type, wandb: Mapping[str, Any] | None = None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger section; a W&B logger gets ``wandb`` (its run id, group and tags:
    :mod:`lightning_modules.wandb_runs`)."""
    objects = []
    for name, entry in _entries(section).items():
        is_wandb = issubclass(get_class(entry._target_), WandbLogger)
        obj = instantiate(entry, **wandb) if is_wandb and wandb else instantiate(entry)
        if not isinstance(obj, kind):
            raise TypeError(f"{name}: expected a {kind.__name__}, got {type(obj).__name__} from {entry._target_}")
        objects.append(obj)
    return objects


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


def finish_wandb(loggers: list[Logger], end: SessionEnd | None = None) -> None:
    """Close W&B runs so that each multirun job gets a run of its own (a no-op on other ranks), with the exit code of
    how the session ended (``end``; None: finished): a failed run gets exit code 1, which W&B shows as failed. The
    summary says how it ended (``run/state``) and a failure's one line (``run/error``, emptied by a session that
    does not fail: a resumed W&B run keeps its summary); a stopped run is marked preempting, W&B's state for a run
    that resumes."""
    if rank_zero_only.rank != 0:
        return
    end = end or SessionEnd("finished", 0)
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            run = logger.experiment
            run.summary.update({"run/state": end.state, "run/error": end.message or ""})
            if end.state == "stopped":
                run.mark_preempting()
            run.finish(exit_code=end.exit_code)


def metrics_as_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float, torch.Tensor)) and torch.numel(torch.as_tensor(v)) == 1
    }


def prepare_datamodule(cfg: DictConfig, **overrides: Any) -> L.LightningDataModule:
    """The datamodule, its data checked (downloaded when asked) and loaded: a missing dataset is reported here,
    before any logger writes a file. Values found in the data (``num_classes`` of a folder tree) are written into
    ``cfg.data`` so that the logged config is complete.

    Every process prepares the data: downloads into one folder take turns through a lock file (the datamodules'
    ``_download``; ``datasets`` locks its cache itself), so the ranks of a multi-node job fill a node-local data
    folder each, or wait for one download into a shared one, instead of looking for files still being fetched."""
    datamodule = instantiate(cfg.data, **overrides)
    datamodule.prepare_data()
    datamodule.setup("fit")
    with open_dict(cfg):
        cfg.data.num_classes = datamodule.num_classes
    return datamodule


def _hydra_job() -> tuple[DictConfig | None, list[str], str | None]:
    """``(hydra config, command-line overrides, data config choice)`` of this job, when run through Hydra."""
    if not HydraConfig.initialized():
        return None, [], None
    hydra_cfg = HydraConfig.get()
    return hydra_cfg, list(hydra_cfg.overrides.task), hydra_cfg.runtime.choices.get("data")


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


def save_run_config(run: RunDirectory, cfg: DictConfig, resume: tuple[Path, dict[str, Any]] | None) -> None:
    """Save this command's config in the run directory; when it resumes the run under a different config, say which
    keys changed and add them to the run's record first. Changing the keys that continue a run (those left out of
    the run directory's name: the schedule's length, devices, ...) is reported; any other change is warned about,
    since the run then mixes two configs (an edited YAML, a changed default)."""
    hydra_cfg, overrides, _ = _hydra_job()
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
    _, overrides, data_choice = _hydra_job()
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
        run.mark_finished(length, metrics, best_checkpoint=best, tested=bool(cfg.get("test", True)))
        report_run(run.path, metrics, best, eval_command(best, data_choice, overrides))
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint: top-1/top-5 and per-class accuracy at each test size, a confusion matrix PNG,
    and predictions for a folder of the user's own images; results go to the run directory."""
    quiet_known_warnings()
    out = Path(cfg.paths.output_dir)
    run = RunDirectory(out)  # a new directory per evaluation: no lock needed
    hydra_cfg, overrides, _ = _hydra_job()
    run.save_config(cfg, hydra_cfg, overrides)
    with run.logged("eval.log"):
        return _evaluate(cfg, out)


def check_eval_inputs(cfg: DictConfig) -> None:
    """What eval.py can check before it loads the data: exactly one network source (``ckpt_path`` or
    ``pretrained``) that exists, and a ``predict_dir`` with images in it."""
    if bool(cfg.get("ckpt_path")) == bool(cfg.get("pretrained")):
        available = ", ".join(pretrained_weights()) or "none installed"
        raise ValueError(
            "eval.py needs exactly one of ckpt_path=<checkpoint written by train.py> or "
            f"pretrained=<variant>.<tag> (pretrained weights available: {available})"
        )
    if cfg.get("ckpt_path") and not Path(cfg.ckpt_path).is_file():
        raise FileNotFoundError(
            f"ckpt_path={cfg.ckpt_path} does not exist; give a checkpoint written by train.py (a run's "
            "checkpoints/best-*.ckpt or last.ckpt)"
        )
    if cfg.get("pretrained"):
        find_pretrained(cfg.pretrained)
    if cfg.get("predict_dir"):
        images_to_predict(Path(cfg.predict_dir))
    check_test_sizes(list(cfg.get("test_sizes") or []), get_class(cfg.data._target_))


def check_test_sizes(sizes: list[int], datamodule: type[ImageDataModule]) -> None:
    """``test_sizes`` other than a dataset's own size where its images are not resized (CIFAR, Fashion-MNIST) are
    refused, naming the fix (``test_sizes``, not ``data.image_size``, which the datamodule's own check would name)."""
    if "image_size" not in datamodule.fixed:
        return
    native = datamodule.Options.image_size
    if any(size != native for size in sizes):
        raise ValueError(
            f"test_sizes={sizes}: {datamodule.dataset_name or datamodule.__name__} images are {native}x{native} and "
            f"are not resized, so they are tested at {native} only; drop test_sizes. Other test sizes need data "
            "that resize: data=imagenet, data=folder, data=hf, data=streaming or data=synthetic"
        )


def evaluated_model(cfg: DictConfig, datamodule: L.LightningDataModule) -> L.LightningModule:
    """The network eval.py tests: a training checkpoint (``ckpt_path``) or pretrained weights (``pretrained``)."""
    if cfg.get("pretrained"):
        return load_pretrained(cfg.pretrained, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans)
    return load_classifier(cfg.ckpt_path, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans)


def _evaluate(cfg: DictConfig, out: Path) -> dict[str, Any]:
    check_eval_inputs(cfg)  # before minutes of data loading
    L.seed_everything(cfg.seed, workers=True)
    sizes = list(cfg.get("test_sizes") or []) or [cfg.data.image_size]
    datamodules = {size: prepare_datamodule(cfg, image_size=size) for size in sizes}
    first = datamodules[sizes[0]]
    model = evaluated_model(cfg, first)
    wandb = evaluation_run(cfg) if uses_wandb(cfg.get("logger")) else None
    loggers = instantiate_dict(cfg.get("logger"), Logger, wandb)
    callbacks = [CpuThreads(cfg.get("cpu_threads"))]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, max_steps=-1)
    source = {"pretrained": cfg.pretrained} if cfg.get("pretrained") else {"checkpoint": str(cfg.ckpt_path)}
    results: dict[str, Any] = {**source, "arch": model.hparams.arch, "sizes": {}}
    end = None
    written = ["eval_results.json"]
    tested = f"pretrained={cfg.pretrained}" if cfg.get("pretrained") else shown(cfg.ckpt_path)
    log.info("Testing %s (%s)", tested, model.hparams.arch)  # timm's own lines on loading weights are not shown
    try:
        for size, datamodule in datamodules.items():
            trainer.test(model, datamodule=datamodule, weights_only=True, verbose=False)
            metrics = metrics_as_floats(trainer.callback_metrics)
            log.info("Test at %d px, %d images: %s", size, len(datamodule.test_set), metrics_text(metrics))
            per_class = model.test_per_class.compute().tolist()
            write_per_class_csv(out / f"per_class_accuracy_{size}.csv", datamodule.class_names, per_class)
            write_confusion_png(
                out / f"confusion_matrix_{size}.png", model.test_confusion.compute(), datamodule.class_names
            )
            written += [f"per_class_accuracy_{size}.csv", f"confusion_matrix_{size}.png"]
            results["sizes"][str(size)] = {
                **metrics,
                "per_class_acc": dict(zip(datamodule.class_names, per_class, strict=True)),
            }
        if cfg.get("predict_dir"):
            predictions = predict_folder(model, first, Path(cfg.predict_dir), out / "predictions.csv")
            results["predictions"] = str(predictions.path)
            results["unreadable_images"] = predictions.unreadable
            written.append(predictions.path.name)
    except SIGTERMException:
        end = SessionEnd("stopped", trainer.global_step, exit_code=exit_status())
        log.warning("Stopped by SIGTERM; %s holds the test sizes finished before it", shown(out / "eval_results.json"))
        raise SystemExit(exit_status()) from None
    except BaseException as err:
        end = session_end(err, trainer.global_step)
        raise
    finally:
        finish_wandb(loggers, end)
        partial = out / ".eval_results.json.partial"  # renamed over the file: never a half-written one
        partial.write_text(json.dumps(results, indent=2))
        os.replace(partial, out / "eval_results.json")
    log.info("Evaluation written to %s: %s", shown(out), ", ".join(written))
    return results
