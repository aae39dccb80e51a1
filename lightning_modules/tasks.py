"""The train and eval tasks behind ``train.py`` / ``eval.py`` (thin Hydra entry points).

Everything here takes a composed Hydra config; nothing knows how many devices there are (the Trainer
owns devices, precision and DDP).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities.model_summary import ModelSummary
from omegaconf import DictConfig, OmegaConf

from lightning_modules.precision import fast_precision

log = logging.getLogger(__name__)
MAX_RUN_NAME = 200  # file names may have 255 bytes


def run_name(override_dirname: str) -> str:
    """A directory-safe run name from Hydra's ``override_dirname`` ("default" without overrides).

    Long names are shortened and suffixed with a hash so that distinct commands stay distinct.
    """
    name = re.sub(r"[^A-Za-z0-9._:+\-]+", "_", override_dirname) or "default"
    if len(name) > MAX_RUN_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: MAX_RUN_NAME - 11]}-{digest}"
    return name


RESOLVERS = {"run_name": run_name, "fast_precision": fast_precision}


def register_resolvers() -> None:
    """Register the resolvers of the configs: ``${run_name:...}`` (hydra, logger) and ``${fast_precision:...}``
    (trainer)."""
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def instantiate_dict(section: DictConfig | None, kind: type) -> list[Any]:
    """Instantiate every entry of a callbacks/logger section that has a ``_target_``."""
    objects = []
    for name, entry in (section or {}).items():
        if entry is None or "_target_" not in entry:
            continue
        obj = instantiate(entry)
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


def log_run_config(cfg: DictConfig, model: L.LightningModule, loggers: list[Logger]) -> None:
    """Send the resolved config (flat keys) and the model's size and summary to every logger."""
    params = flatten(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    params["model/params_total"] = sum(p.numel() for p in model.parameters())
    params["model/params_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for logger in loggers:
        logger.log_hyperparams(params)
        if isinstance(logger, WandbLogger):
            logger.experiment.summary["model/summary"] = str(ModelSummary(model, max_depth=2))


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint ``fit`` resumes from: ``ckpt_path`` if given, else this run's last.ckpt if any."""
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path} does not exist; give an existing .ckpt or null")
        return str(path)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if cfg.get("auto_resume", True) and last.is_file():
        log.info("Resuming from %s (auto_resume; set auto_resume=false to start over elsewhere)", last)
        return str(last)
    return None


def finish_wandb(loggers: list[Logger]) -> None:
    """Close W&B runs so that each multirun job gets a run of its own."""
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


def metrics_as_floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float, torch.Tensor)) and torch.numel(torch.as_tensor(v)) == 1
    }


def train(cfg: DictConfig) -> dict[str, float]:
    """Seed, build data/module/callbacks/loggers/trainer, fit (auto-resuming), test; return metrics."""
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.module)
    callbacks = instantiate_dict(cfg.get("callbacks"), Callback)
    loggers = instantiate_dict(cfg.get("logger"), Logger)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    try:
        if trainer.is_global_zero:
            log_run_config(cfg, model, loggers)
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg), weights_only=True)
        metrics = metrics_as_floats(trainer.callback_metrics)
        if cfg.get("test", True):
            best = next(
                (cb.best_model_path for cb in callbacks if isinstance(cb, ModelCheckpoint) and cb.best_model_path),
                None,
            )
            if best is None:
                log.warning("No best checkpoint on val/acc1; testing the final weights")
            trainer.test(model, datamodule=datamodule, ckpt_path=best, weights_only=True)
            metrics.update(metrics_as_floats(trainer.callback_metrics))
    finally:
        finish_wandb(loggers)
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint: top-1/top-5 and per-class accuracy at each test size, a confusion matrix PNG,
    and predictions for a folder of the user's own images; results go to the run directory."""
    from lightning_modules.checkpoints import load_classifier
    from lightning_modules.reports import predict_folder, write_confusion_png, write_per_class_csv

    L.seed_everything(cfg.seed, workers=True)
    model = load_classifier(cfg.ckpt_path, num_classes=cfg.data.num_classes)
    loggers = instantiate_dict(cfg.get("logger"), Logger)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=[], max_steps=-1)
    out = Path(cfg.paths.output_dir)
    results: dict[str, Any] = {"checkpoint": str(cfg.ckpt_path), "arch": model.hparams.arch, "sizes": {}}
    sizes = list(cfg.get("test_sizes") or []) or [cfg.data.image_size]
    try:
        for size in sizes:
            datamodule = instantiate(cfg.data, image_size=size)
            trainer.test(model, datamodule=datamodule, weights_only=True)
            metrics = metrics_as_floats(trainer.callback_metrics)
            per_class = model.test_per_class.compute().tolist()
            write_per_class_csv(out / f"per_class_accuracy_{size}.csv", datamodule.class_names, per_class)
            write_confusion_png(
                out / f"confusion_matrix_{size}.png", model.test_confusion.compute(), datamodule.class_names
            )
            results["sizes"][str(size)] = {
                **metrics,
                "per_class_acc": dict(zip(datamodule.class_names, per_class, strict=True)),
            }
        if cfg.get("predict_dir"):
            results["predictions"] = str(
                predict_folder(model, datamodule, Path(cfg.predict_dir), out / "predictions.csv")
            )
    finally:
        finish_wandb(loggers)
    (out / "eval_results.json").write_text(json.dumps(results, indent=2))
    log.info("Evaluation results written to %s", out / "eval_results.json")
    return results
