"""Trained weights as timm pretrained tags: ``timm.create_model("resattn56_cifar.fmnist", pretrained=True)``.

A tag is two files in a weights folder: ``<variant>.<tag>.pth``, the network's state dict, and
``<variant>.<tag>.json``, what timm needs to use it (``num_classes``, ``input_size``, ``mean``, ``std``, class names)
and where it came from (network options, test accuracy, the command that trained it). The folders are
``resattn/weights/`` (shipped with the package) and, for weights of your own, the one named by the environment
variable ``RESATTN_WEIGHTS_DIR``; both are read when resattn is imported. ``python -m analysis.export_weights``
writes such a pair from a training checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).with_name("weights")
ENV = "RESATTN_WEIGHTS_DIR"


@dataclass(frozen=True)
class Weights:
    """One pretrained tag: its files and its description."""

    variant: str
    tag: str
    file: Path
    num_classes: int
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    label_names: tuple[str, ...] = ()
    net: dict[str, Any] = field(default_factory=dict)  # network options it was built with (timm.create_model kwargs)
    test_top1: float | None = None
    test_precision: str | None = None  # Lightning's precision test_top1 was measured in (bf16 may flip a few images)
    source: str = ""  # the command, run and data it came from

    @property
    def name(self) -> str:
        return f"{self.variant}.{self.tag}"

    def describe(self) -> dict[str, Any]:
        """The JSON written beside the weights."""
        return {
            "variant": self.variant,
            "tag": self.tag,
            "num_classes": self.num_classes,
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "label_names": list(self.label_names),
            "net": self.net,
            "test_top1": self.test_top1,
            "test_precision": self.test_precision,
            "source": self.source,
        }


def weights_dirs() -> list[Path]:
    """Where tags are looked for: the package's own folder, then ``$RESATTN_WEIGHTS_DIR``."""
    extra = os.environ.get(ENV)
    return [SHIPPED, *([Path(extra)] if extra else [])]


def read_weights(description: Path) -> Weights:
    """The tag described by ``<variant>.<tag>.json`` (its weights beside it)."""
    raw = json.loads(description.read_text())
    weights = description.with_suffix(".pth")
    if not weights.is_file():
        raise FileNotFoundError(f"{description} describes weights {weights}, which do not exist")
    return Weights(
        variant=raw["variant"],
        tag=raw["tag"],
        file=weights,
        num_classes=int(raw["num_classes"]),
        input_size=tuple(raw["input_size"]),
        mean=tuple(raw["mean"]),
        std=tuple(raw["std"]),
        label_names=tuple(raw.get("label_names", ())),
        net=dict(raw.get("net", {})),
        test_top1=raw.get("test_top1"),
        test_precision=raw.get("test_precision"),
        source=raw.get("source", ""),
    )


def available() -> dict[str, Weights]:
    """Every tag in :func:`weights_dirs`, by ``<variant>.<tag>`` (a later folder's tag replaces an earlier one)."""
    found: dict[str, Weights] = {}
    for folder in weights_dirs():
        for description in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            weights = read_weights(description)
            found[weights.name] = weights
    return found


def find(name: str) -> Weights:
    """The tag called ``name`` (``<variant>.<tag>``); an unknown name lists the known ones."""
    tags = available()
    if name not in tags:
        known = ", ".join(tags) or "none"
        raise ValueError(f"unknown pretrained weights {name!r}; available: {known} (folders: {weights_dirs()})")
    return tags[name]


def timm_cfg(weights: Weights) -> dict[str, Any]:
    """The fields of timm's pretrained cfg that the tag sets (the variant's default cfg gives the rest)."""
    return dict(
        file=str(weights.file),
        num_classes=weights.num_classes,
        input_size=weights.input_size,
        mean=weights.mean,
        std=weights.std,
        label_names=weights.label_names or None,
        notes=(weights.source,) if weights.source else (),
    )
