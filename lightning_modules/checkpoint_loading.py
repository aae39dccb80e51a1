"""Training checkpoints and pretrained tags as ImageClassifiers, checked against the run that wants them, with
errors that name both sides. Reading the files safely is :mod:`resattn.checkpoints`' job."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm

from lightning_modules.classifier import ImageClassifier
from resattn import pretrained
from resattn.checkpoints import NETWORK_HPARAMS, CheckpointError, load_weights, read_checkpoint


def describe_network(hparams: Mapping[str, Any]) -> str:
    """``resattn56_cifar for 10 classes, 1 input channel(s)`` plus any non-default network options."""
    text = (
        f"{hparams.get('arch')!r} for {hparams.get('num_classes')} classes, {hparams.get('in_chans')} input channel(s)"
    )
    options = hparams.get("net")
    return f"{text}, options {options}" if options else text


def check_fits(path: str | Path, checkpoint: Mapping[str, Any], model: ImageClassifier) -> None:
    """Raise one :class:`CheckpointError` naming both networks when the checkpoint's weights cannot be loaded into
    ``model`` (different architecture, classes, channels or network options)."""
    saved = checkpoint.get("hyper_parameters") or {}
    wanted = dict(model.hparams)
    hparams_differ = any((saved.get(key) or None) != (wanted.get(key) or None) for key in NETWORK_HPARAMS)
    own = model.state_dict()
    weights = checkpoint["state_dict"]
    shapes_differ = set(weights) != set(own) or any(tuple(weights[k].shape) != tuple(own[k].shape) for k in own)
    if hparams_differ or shapes_differ:
        raise CheckpointError(
            f"{path} holds {describe_network(saved)}, but this run builds {describe_network(wanted)}: its weights do "
            "not fit. Give a checkpoint of this configuration, or the configuration of that checkpoint"
        )


def load_classifier(
    path: str | Path,
    num_classes: int | None = None,
    in_chans: int | None = None,
    arch: str | None = None,
    map_location: str = "cpu",
) -> ImageClassifier:
    """``ImageClassifier`` from a checkpoint, checked against the expected class count, input channels and
    architecture."""
    checkpoint = read_checkpoint(path, lazy=True)
    hparams = checkpoint.get("hyper_parameters") or {}
    if "arch" not in hparams or "num_classes" not in hparams:
        raise CheckpointError(f"{path} holds no ImageClassifier hyper-parameters (arch, num_classes)")
    if num_classes is not None and hparams["num_classes"] != num_classes:
        raise CheckpointError(
            f"{path} was trained for {hparams['num_classes']} classes but the data has {num_classes}; "
            f"pick the matching data config or a checkpoint trained on this data"
        )
    saved_chans = hparams.get("in_chans", 3)
    if in_chans is not None and saved_chans != in_chans:
        raise CheckpointError(
            f"{path} was trained on {saved_chans}-channel images (in_chans={saved_chans}) but the data has "
            f"{in_chans} channel(s) (data.in_chans={in_chans}); pick a data config with in_chans={saved_chans} or a "
            "checkpoint trained on this data"
        )
    if arch is not None and hparams["arch"] != arch:
        raise CheckpointError(f"{path} holds architecture {hparams['arch']!r}, but the config asks for {arch!r}")
    unknown = sorted(set(hparams) - set(inspect.signature(ImageClassifier).parameters))
    if unknown:
        raise CheckpointError(
            f"{path} holds hyper-parameters that ImageClassifier does not take ({', '.join(unknown)}): it was written "
            "by another version of this code. Train it again, or load it with the version that wrote it"
        )
    model = ImageClassifier(**hparams)
    load_weights(model, checkpoint["state_dict"], path, f"its own architecture {describe_network(hparams)}")
    return model.to(map_location)


def load_pretrained(name: str, num_classes: int | None = None, in_chans: int | None = None) -> ImageClassifier:
    """``ImageClassifier`` around timm's ``<variant>.<tag>`` pretrained weights (:mod:`resattn.pretrained`), checked
    against the data's class count and input channels."""
    weights = pretrained.find(name)
    chans = weights.input_size[0]
    if num_classes is not None and weights.num_classes != num_classes:
        raise CheckpointError(
            f"pretrained={name} was trained for {weights.num_classes} classes but the data has {num_classes}; "
            "pick the data it was trained on"
        )
    if in_chans is not None and chans != in_chans:
        raise CheckpointError(
            f"pretrained={name} was trained on {chans}-channel images but the data has {in_chans} channel(s)"
        )
    model = ImageClassifier(weights.variant, num_classes=weights.num_classes, in_chans=chans, net=weights.net)
    net = timm.create_model(name, pretrained=True, in_chans=chans, **weights.net)  # as any timm user loads them
    model.net.load_state_dict(net.state_dict())
    return model
