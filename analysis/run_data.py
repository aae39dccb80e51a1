"""The data for the offline tools (mask grids, response probe): a ``conf/data`` choice composed by Hydra, or the
data config saved in the run directory of a checkpoint, set up and ready to hand out images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from analysis.runs import Run
from datamodules.base import ImageDataModule
from datamodules.configs import compose, options
from datamodules.user_images import find_images, preprocess
from lightning_modules.run_directory import RunDirectory


def run_directory(ckpt: Path) -> Path | None:
    """``<run>`` for a checkpoint in ``<run>/checkpoints/``, else None."""
    folder = ckpt.resolve().parent
    return folder.parent if folder.name == "checkpoints" else None


def finished_best_checkpoint(run: Path) -> Path:
    """The best checkpoint that the finished training in ``run`` recorded, in ``run``'s own ``checkpoints/`` (its
    ``run.json`` holds the path where it was trained); an unfinished run is an error."""
    directory = RunDirectory(run)
    if not directory.record_path.is_file():
        raise FileNotFoundError(f"{run} is not a run directory of train.py (no run.json)")
    best = (directory.read_record().get("finished") or {}).get("best_checkpoint")
    if best is None:
        raise ValueError(
            f"{run} has not finished its training and test, so it has no final best checkpoint: rerun its command "
            "to finish it, or name one of its checkpoints"
        )
    path = run / "checkpoints" / Path(best).name  # by name: the run directory may have been moved or copied
    if not path.is_file():
        raise FileNotFoundError(f"{run}'s best checkpoint {path} does not exist")
    return path


def recorded_best_checkpoints(runs: Sequence[Run]) -> list[tuple[Run, Path]]:
    """The runs that finished with a test top-1, each with its recorded best checkpoint
    (:func:`finished_best_checkpoint`), in the given order; runs whose record or checkpoint is missing are passed
    over."""
    found = []
    for run in runs:
        if "test/acc1" not in run.metrics:
            continue
        try:
            found.append((run, finished_best_checkpoint(run.path)))
        except (ValueError, OSError):
            continue
    return found


def default_output(ckpt: Path, name: str) -> Path:
    """``<run>/<name>`` for a checkpoint in ``<run>/checkpoints/``, else ``<name>`` beside the checkpoint."""
    return (run_directory(ckpt) or ckpt.resolve().parent) / name


def saved_run_config(ckpt: Path) -> DictConfig | None:
    """The config of the run that wrote ``ckpt``, its ``paths.root_dir`` set to where that run was started."""
    run = run_directory(ckpt)
    if run is None or not (run / ".hydra" / "config.yaml").is_file():
        return None
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    hydra_file = run / ".hydra" / "hydra.yaml"
    cwd = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.cwd") if hydra_file.is_file() else None
    # a run restored from an archive (analysis.run_archive) was started in a folder this machine may not have
    cfg.paths.root_dir = str(cwd if cwd and Path(cwd).is_dir() else Path.cwd())
    return cfg


def data_config(ckpt: Path | None, data: str | None, overrides: Sequence[str] = ()) -> DictConfig:
    """The ``data`` node: ``conf/data/<data>.yaml`` as ``eval.py data=<data>`` composes it, or the data config of the
    run that wrote ``ckpt``, with ``key=value`` overrides of its keys."""
    if data is not None:
        try:
            cfg = compose([f"data={data}", *(f"data.{o}" for o in overrides)], config_name="eval")
        except MissingConfigException:
            raise ValueError(f"unknown data config {data!r}; known: {', '.join(options('data'))}") from None
    else:
        found = saved_run_config(ckpt) if ckpt is not None else None
        if found is None:
            raise ValueError(
                f"no run config next to {ckpt} (expected <run>/checkpoints/*.ckpt with <run>/.hydra/config.yaml): "
                "name the data the checkpoint was trained on with --data (e.g. --data cifar10)"
            )
        cfg = found
        cfg.data = OmegaConf.merge(cfg.data, OmegaConf.from_dotlist(list(overrides)))
    return cfg.data


def load_datamodule(ckpt: Path | None, data: str | None, overrides: Sequence[str] = ()) -> ImageDataModule:
    """A set-up datamodule for :func:`data_config`."""
    datamodule = instantiate(data_config(ckpt, data, overrides))
    datamodule.setup()
    return datamodule


def split_images(datamodule: ImageDataModule, split: str, num_images: int) -> tuple[torch.Tensor, list[str]]:
    """The first ``num_images`` preprocessed images of the ``val`` or ``test`` split and their class names."""
    if split not in ("val", "test"):
        raise ValueError(f"unknown split {split!r}; accepted: val, test")
    dataset = datamodule.val_set if split == "val" else datamodule.test_set
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"the {split} split is empty; use --split test or a data config with a validation split")
    items = [dataset[i] for i in range(min(num_images, len(dataset)))]
    names = datamodule.class_names or []
    labels = [names[label] if label < len(names) else str(label) for _, label in items]
    return torch.stack([image for image, _ in items]), labels


def file_images(datamodule: ImageDataModule, paths: Sequence[str], num_images: int) -> tuple[torch.Tensor, list[str]]:
    """At most ``num_images`` image files (or images under folders), in sorted order, preprocessed like the test
    split (:mod:`datamodules.user_images`)."""
    files = find_images(paths)[:num_images]
    return torch.stack([preprocess(path, datamodule) for path in files]), [path.name for path in files]
