"""Safe checkpoint loading with errors that say what is wrong.

Checkpoints are read with ``torch.load(weights_only=True)``: a file that needs arbitrary code to
unpickle (a possible attack) is refused instead of executed.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from lightning_modules.classifier import ImageClassifier


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, unsafe, or not matching the requested setup."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"refusing to load {path}: it contains objects that would run code when unpickled "
            f"(torch.load weights_only=True rejected it: {str(err).splitlines()[0]}). Only load checkpoints "
            "you trust, re-saved as plain tensors and containers"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or not a PyTorch checkpoint ({err})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    return checkpoint


def load_classifier(
    path: str | Path, num_classes: int | None = None, arch: str | None = None, map_location: str = "cpu"
) -> ImageClassifier:
    """``ImageClassifier`` from a checkpoint, checked against the expected class count / architecture."""
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters") or {}
    if "arch" not in hparams or "num_classes" not in hparams:
        raise CheckpointError(f"{path} holds no ImageClassifier hyper-parameters (arch, num_classes)")
    if num_classes is not None and hparams["num_classes"] != num_classes:
        raise CheckpointError(
            f"{path} was trained for {hparams['num_classes']} classes but the data has {num_classes}; "
            f"pick the matching data config or a checkpoint trained on this data"
        )
    if arch is not None and hparams["arch"] != arch:
        raise CheckpointError(f"{path} holds architecture {hparams['arch']!r}, but the config asks for {arch!r}")
    try:
        return ImageClassifier.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path} does not fit its own architecture {hparams['arch']!r}: {err}") from err
