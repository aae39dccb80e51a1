"""The network and data an offline mask tool works on, named the same way by every such command: a training
checkpoint (its own run config gives the data unless ``--data`` names a ``conf/data`` choice) or a pretrained tag
(``--data`` is then required: a tag has no run config)."""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from analysis.run_data import default_output, load_datamodule
from datamodules.base import ImageDataModule
from lightning_modules.checkpoint_loading import load_classifier, load_pretrained
from lightning_modules.mask_plots import has_attention_modules


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """``--ckpt`` or ``--pretrained`` (one of them), ``--data`` and ``--set``."""
    network = parser.add_mutually_exclusive_group(required=True)
    network.add_argument("--ckpt", help="a checkpoint written by train.py")
    network.add_argument("--pretrained", metavar="TAG", help="a pretrained tag, e.g. resattn56_cifar.fmnist")
    parser.add_argument("--data", help="a conf/data/*.yaml name (default: the checkpoint's own run config)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="data config overrides")


def attention_network(args: argparse.Namespace) -> tuple[nn.Module, ImageDataModule]:
    """The network the arguments name, in eval mode, and its set-up datamodule; a network without attention modules
    is an error (it has no masks)."""
    if args.ckpt is not None:
        ckpt = Path(args.ckpt)
        if not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {ckpt} does not exist")
        datamodule = load_datamodule(ckpt, args.data, args.set)
        model = load_classifier(ckpt, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans)
    else:
        if args.data is None:
            raise ValueError(
                f"--pretrained {args.pretrained} has no run config: name the data it was trained on with --data "
                "(e.g. --data fashion_mnist)"
            )
        datamodule = load_datamodule(None, args.data, args.set)
        model = load_pretrained(args.pretrained, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans)
    if not has_attention_modules(model):
        raise ValueError(f"{model.hparams.arch} has no attention modules: it has no masks")
    return model.eval(), datamodule


def output_path(args: argparse.Namespace, name: str) -> Path:
    """Where a tool writes ``name`` by default: beside a checkpoint's run, or under ``logs/<tool>/<tag>`` for a tag."""
    if args.ckpt:
        return default_output(Path(args.ckpt), name)
    stem, dot, suffix = name.partition(".")
    return Path("logs") / stem / (f"{args.pretrained}.{suffix}" if dot else args.pretrained)
