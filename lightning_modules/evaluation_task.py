"""The eval task behind ``eval.py`` (a thin Hydra entry point): a training checkpoint or pretrained weights tested at
one or several sizes, with per-class accuracy, a confusion matrix and predictions for the user's own images, each
evaluation into a new directory (docs/design.md §2)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from datamodules.base import ImageDataModule
from lightning_modules.checkpoint_loading import load_classifier, load_pretrained
from lightning_modules.console import quiet_known_warnings
from lightning_modules.cpu_threads import CpuThreads
from lightning_modules.eval_outputs import images_to_predict, predict_folder, write_confusion_png, write_per_class_csv
from lightning_modules.run_directory import RunDirectory
from lightning_modules.run_report import metrics_text, shown
from lightning_modules.stopping import SessionEnd, exit_status, session_end
from lightning_modules.task_setup import (
    finish_wandb,
    hydra_job,
    instantiate_dict,
    metrics_as_floats,
    prepare_datamodule,
    uses_wandb,
)
from lightning_modules.wandb_runs import evaluation_run
from resattn.pretrained import available as pretrained_weights
from resattn.pretrained import find as find_pretrained

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint: top-1/top-5 and per-class accuracy at each test size, a confusion matrix PNG,
    and predictions for a folder of the user's own images; results go to the run directory."""
    quiet_known_warnings()
    out = Path(cfg.paths.output_dir)
    run = RunDirectory(out)  # a new directory per evaluation: no lock needed
    hydra_cfg, overrides, _ = hydra_job()
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
    check_test_sizes(list(cfg.get("test_sizes") or []), get_class(cfg.data._target_), cfg.data)


def check_test_sizes(sizes: list[int], datamodule: type[ImageDataModule], options: Mapping[str, Any]) -> None:
    """``test_sizes`` other than the images' own size where the datamodule does not resize them (CIFAR,
    Fashion-MNIST, the canvases of cluttered Fashion-MNIST) are refused, naming the fix (``test_sizes``, not
    ``data.image_size``, which the datamodule's own check would name)."""
    native = datamodule.native_image_size(options)
    if native is not None and any(size != native for size in sizes):
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


def note_tag_precision(name: str, precision: str) -> None:
    """Say so when a tag's recorded test top-1 was measured in another precision than this evaluation runs in: bf16
    rounding moves a few borderline images, so the numbers can differ by a few hundredths of a point."""
    weights = find_pretrained(name)
    if weights.test_top1 is not None and weights.test_precision not in (None, precision):
        log.info(
            "%s's recorded test top-1 (%.2f %%) was measured in %s; this evaluation runs in %s, which can differ "
            "by a few images: trainer.precision=%s reproduces it.",
            name,
            100 * weights.test_top1,
            weights.test_precision,
            precision,
            weights.test_precision,
        )


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
    results: dict[str, Any] = {**source, "arch": model.hparams.arch, "precision": str(trainer.precision), "sizes": {}}
    if cfg.get("pretrained"):
        note_tag_precision(cfg.pretrained, str(trainer.precision))
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
