"""Reading saved weights safely, and the network a saved file describes: the one path from a checkpoint's
hyper-parameters to a network (:func:`build_network`, :func:`load_weights`), which ``lightning_modules`` takes too.

Files are read with ``torch.load(weights_only=True)``: one that needs arbitrary code to unpickle (a possible attack)
is refused instead of executed, with a message that says so; a truncated or foreign file gets a message too. Two
kinds of file hold a network: a training checkpoint written by train.py (Lightning's ``.ckpt``: the network is the
module's ``net`` and its hyper-parameters name the variant and its options) and a plain state dict (``.pth``).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from resattn.net import ResidualAttentionNet
from resattn.variants import list_variants

# The hyper-parameters of a training checkpoint that decide the network's structure, i.e. whether its weights fit.
NETWORK_HPARAMS = ("arch", "num_classes", "in_chans", "net")


class CheckpointError(RuntimeError):
    """Saved weights that cannot be used: unreadable, unsafe, or not matching the requested setup."""


def load_file(path: str | Path, *, lazy: bool = False) -> Any:
    """The contents of a file written by ``torch.save``, tensors and plain containers only.

    ``lazy`` maps the tensors instead of reading them (``mmap``): a cheap check of a large file's integrity and
    safety before it is used for real.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=lazy)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        what = f"it would import and call {found[1]}" if found else "it holds objects that would run code"
        raise CheckpointError(
            f"refusing to load {path}: {what} when unpickled, and only tensors and plain containers are accepted. "
            "Checkpoints written by train.py never need that; a file that does was made by other code and may be "
            "an attack. Use a checkpoint written by train.py, or re-save the weights as a plain state dict"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is truncated or not a PyTorch checkpoint "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None


def read_checkpoint(path: str | Path, *, lazy: bool = False) -> dict[str, Any]:
    """A training checkpoint (a dict with a ``state_dict`` entry), read safely by :func:`load_file`."""
    checkpoint = load_file(path, lazy=lazy)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    return checkpoint


def build_network(
    arch: str, num_classes: int | None = None, in_chans: int | None = None, net: Mapping[str, Any] | None = None
) -> nn.Module:
    """``timm.create_model(arch, num_classes=..., in_chans=..., **net)`` (a size left None: the model's default), with a
    clear error for unknown names (resattn variants are listed)."""
    if not timm.is_model(arch):
        raise ValueError(
            f"unknown architecture {arch!r}; resattn variants: {', '.join(list_variants())} "
            "(any other timm model name works too)"
        )
    sizes = {key: value for key, value in (("num_classes", num_classes), ("in_chans", in_chans)) if value is not None}
    return timm.create_model(arch, **sizes, **dict(net or {}))


def load_weights(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, expected: str) -> None:
    """``module.load_state_dict(state)``; weights that do not fit raise a :class:`CheckpointError` naming ``path``,
    what was ``expected`` and the first mismatches."""
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        details = " ".join(str(err).split("\n")[1:3]).strip()
        raise CheckpointError(f"{path} does not fit {expected}: {details}") from None


def network_state(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's weights in a training checkpoint's state dict (the module's ``net.`` entries, unprefixed)."""
    return {k.removeprefix("net."): v for k, v in state_dict.items() if k.startswith("net.")}


def network_from_file(path: str | Path, variant: str | None = None, **options: Any) -> ResidualAttentionNet:
    """The network saved in ``path``, in eval mode, built by ``timm.create_model``.

    A training checkpoint supplies the variant, class count, input channels and network options it was trained
    with; a plain state dict supplies the class count and input channels (from the classifier and the first conv)
    and needs ``variant``. ``options`` add to or replace what the file supplies.
    """
    saved = load_file(path)
    if isinstance(saved, dict) and "state_dict" in saved:
        hparams = saved.get("hyper_parameters") or {}
        variant = variant or hparams.get("arch")
        options = {
            "num_classes": hparams.get("num_classes"),
            "in_chans": hparams.get("in_chans"),
            **dict(hparams.get("net") or {}),
            **options,
        }
        state = network_state(saved["state_dict"])
    elif isinstance(saved, dict) and "stem.conv.weight" in saved:
        state = saved
        fc = state.get("head.fc.weight")
        options = {"num_classes": 0 if fc is None else fc.shape[0], "in_chans": state["stem.conv.weight"].shape[1]} | (
            options
        )
    else:
        raise CheckpointError(
            f"{path} holds neither a training checkpoint (a 'state_dict' entry) nor a network's state dict "
            "(a 'stem.conv.weight' entry)"
        )
    if variant is None:
        raise ValueError(f"{path} is a plain state dict: name its variant (e.g. resattn56_cifar)")
    net_options = {k: v for k, v in options.items() if k not in NETWORK_HPARAMS and v is not None}
    net = build_network(variant, options.get("num_classes"), options.get("in_chans"), net_options)
    load_weights(net, state, path, f"{variant} with options {options}")
    return net.eval()
