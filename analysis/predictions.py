"""A finished run's test predictions: which test images its recorded best checkpoint classifies right.

The paired claims (:mod:`analysis.paired`) need them for every finished run of a table, at the precision each run was
tested in; on a CPU that has to emulate bf16 that is most of the time ``analysis.results`` takes (about a minute per
run of the cluttered grid). Once computed they are kept in the run directory, ``predictions/test-<precision>-<key>.pt``,
which ``analysis.run_archive`` keeps with the run: a rerun of the analysis, here or on a clone of the archive, reads
them instead of evaluating again. The key is a digest of the checkpoint's weights and of the test split's labels, so
other weights, or a test split that changed, are evaluated afresh.
"""

from __future__ import annotations

import hashlib
import logging
import os
from functools import cache
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from analysis.run_data import load_datamodule, run_directory, saved_run_config
from analysis.runs import tested_precision
from datamodules.label_noise import dataset_labels
from lightning_modules.checkpoint_loading import load_classifier
from lightning_modules.config_resolvers import register_resolvers
from resattn.checkpoints import read_checkpoint

log = logging.getLogger(__name__)

FOLDER = "predictions"
AUTOCAST = {"bf16-mixed": torch.bfloat16, "bf16": torch.bfloat16, "16-mixed": torch.float16}


def run_precision(checkpoint: Path) -> str:
    """The precision the run that wrote ``checkpoint`` was tested in (:func:`~analysis.runs.tested_precision`), else
    its config's ``trainer.precision`` as resolved here, else ``32-true``."""
    run = run_directory(checkpoint)
    recorded = tested_precision(run) if run is not None else None
    if recorded:
        return str(recorded)
    cfg = saved_run_config(checkpoint)
    if cfg is None:
        return "32-true"
    register_resolvers()
    return str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))


def _digest(state: dict[str, torch.Tensor], labels: torch.Tensor) -> str:
    """A digest of the weights (names, dtypes, shapes, values) and of the test labels, in order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    digest.update(labels.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()[:16]


def _test_labels(test_set: Dataset) -> torch.Tensor:
    """The test split's labels in order, read without decoding images where the dataset exposes them."""
    try:
        return dataset_labels(test_set)
    except TypeError:
        return torch.as_tensor([int(test_set[index][1]) for index in range(len(test_set))])


def _read_kept(path: Path, key: str, images: int) -> torch.Tensor | None:
    """The kept predictions at ``path`` when they are whole and for ``key``; None (with a warning when the file is
    there but unusable) otherwise."""
    if not path.is_file():
        return None
    try:
        kept: Any = torch.load(path, weights_only=True)
    except Exception as err:  # whatever makes it unreadable, it is only a cache miss
        log.warning("ignoring the unreadable kept predictions %s (%s); evaluating again", path, err)
        return None
    found = kept if isinstance(kept, dict) else {}
    correct = found.get("correct")
    if found.get("key") != key or not isinstance(correct, torch.Tensor) or correct.shape != (images,):
        log.warning("ignoring the kept predictions %s: not those of this checkpoint and test split", path)
        return None
    return correct.to(torch.bool)


def _keep(path: Path, key: str, checkpoint: Path, precision: str, correct: torch.Tensor) -> None:
    """Write the predictions next to the run, whole or not at all (a temporary file renamed into place)."""
    path.parent.mkdir(exist_ok=True)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    torch.save({"key": key, "checkpoint": checkpoint.name, "precision": precision, "correct": correct}, partial)
    os.replace(partial, path)


@torch.no_grad()
def _evaluate(model: torch.nn.Module, loader: Any, precision: str) -> torch.Tensor:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.eval().to(device)
    dtype = AUTOCAST.get(precision)
    correct = []
    for images, labels in loader:
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = model(images.to(device))
        correct.append(logits.argmax(dim=1).cpu() == labels)
    return torch.cat(correct)


@cache
def correct_on_test_split(checkpoint: Path) -> torch.Tensor:
    """One bool per image of the test split of ``checkpoint``'s own run config: did the network classify it right?
    Evaluated on the GPU when there is one, else the CPU, at the run's precision (autocast for the mixed ones), in
    the test split's order; read from the run's ``predictions/`` when they were kept there for these weights and
    test labels, else evaluated and kept; once per checkpoint and process."""
    datamodule = load_datamodule(checkpoint, None)
    precision = run_precision(checkpoint)
    content = read_checkpoint(checkpoint)
    labels = _test_labels(datamodule.test_set)
    key = _digest(content["state_dict"], labels)
    run = run_directory(checkpoint)
    path = run / FOLDER / f"test-{precision}-{key}.pt" if run is not None else None
    kept = _read_kept(path, key, len(labels)) if path is not None else None
    if kept is not None:
        return kept
    model = load_classifier(checkpoint, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans)
    correct = _evaluate(model, datamodule.test_dataloader(), precision)
    if path is not None:
        try:
            _keep(path, key, checkpoint, precision, correct)
        except OSError as err:
            log.warning("could not keep the predictions in %s (%s); the next analysis evaluates again", path, err)
    return correct
