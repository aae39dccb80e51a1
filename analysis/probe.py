"""Response-vanishing probe (docs/paper.md §6.3, Fig. 4): the mean absolute value of every attention module's
output, for networks with attention residual learning (ARL, ``(1+M)T``) and naive attention learning (NAL, ``MT``).

    python -m analysis.probe --arch resattn164_cifar --attention arl nal [--data NAME] [--out DIR]
    python -m analysis.probe --ckpt arl/checkpoints/last.ckpt --ckpt nal/checkpoints/last.ckpt

The paper reports that with Attention-164 under NAL the response of stage 2 vanishes after 4 modules. Writes
``<out>/responses.csv`` (network, attention, module, stage, position, mean_abs_response) and
``<out>/responses.png`` (log scale, one line per network, stage boundaries dashed). Freshly initialised networks
(``--arch``) share their weights across ``--attention`` choices (same seed) and run with batch statistics in BN
(as at the start of training); checkpoints run in eval mode. Inputs: ``--data random`` (standard normal, the
default) or the first ``--num-images`` validation images of a ``conf/data/*.yaml`` (or the checkpoint's run config
with ``--data run``).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from itertools import pairwise
from pathlib import Path

import torch
from hydra.errors import HydraException
from torch import nn

import resattn
from analysis.run_data import default_output, load_datamodule, split_images
from lightning_modules.checkpoint_loading import load_classifier
from lightning_modules.figures import pyplot, save_figure
from resattn.checkpoints import CheckpointError, build_network


@dataclass(frozen=True)
class Response:
    """Mean |output| of one attention module of one network."""

    network: str
    attention: str  # ARL or NAL
    module: str  # e.g. stages.1.attention.3
    stage: int  # 1-based
    position: int  # 1-based order of the module in the forward pass
    mean_abs_response: float


def _stage(name: str) -> int:
    found = re.match(r"stages\.(\d+)\.", name)
    return int(found[1]) + 1 if found else 0


@torch.no_grad()
def module_responses(net: nn.Module, images: torch.Tensor) -> list[tuple[str, float]]:
    """``[(module name, mean |output|)]`` of every attention module, in forward order, from one forward pass
    (forward hooks on the modules' outputs; the network's train/eval mode is left as it is)."""
    values: dict[str, float] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, key=name: values.__setitem__(key, out.abs().mean().item()))
        for name, module in net.attention_modules()
    ]
    try:
        net(images)
    finally:
        for handle in handles:
            handle.remove()
    return [(name, values[name]) for name, _ in net.attention_modules()]


def probe(networks: Sequence[tuple[str, nn.Module]], images: torch.Tensor) -> list[Response]:
    """:func:`module_responses` of each ``(label, network)`` as :class:`Response` rows."""
    rows = []
    for label, net in networks:
        first = next(iter(net.attention_modules()), None) if hasattr(net, "attention_modules") else None
        if first is None:
            raise ValueError(f"{label} has no attention modules: nothing to probe")
        attention = "ARL" if first[1].attention_residual else "NAL"
        for position, (name, value) in enumerate(module_responses(net, images), start=1):
            rows.append(Response(label, attention, name, _stage(name), position, value))
    return rows


def write_csv(rows: Sequence[Response], path: Path) -> Path:
    """The responses as CSV, one row per (network, module)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([field.name for field in fields(Response)])
        writer.writerows(astuple(row) for row in rows)
    return path


def plot_responses(rows: Sequence[Response], path: Path, title: str | None = None) -> Path:
    """Mean |output| per module (log scale), one line per network, dashed lines between stages."""
    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    networks = list(dict.fromkeys(row.network for row in rows))
    for network in networks:
        mine = [row for row in rows if row.network == network]
        ax.plot([r.position for r in mine], [r.mean_abs_response for r in mine], marker="o", label=network)
    first = [row for row in rows if row.network == networks[0]]
    for before, after in pairwise(first):
        if after.stage != before.stage:
            ax.axvline(before.position + 0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks([r.position for r in first], [f"{r.stage}.{int(r.module.rsplit('.', 1)[-1]) + 1}" for r in first])
    ax.set_yscale("log")
    ax.set_xlabel("attention module (stage.module)")
    ax.set_ylabel("mean |output|")
    ax.set_title(title or "Mean absolute response of each attention module's output (docs/paper.md §6.3, Fig. 4)")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def fresh_network(arch: str, attention_residual: bool, seed: int, num_classes: int, in_chans: int) -> nn.Module:
    """A freshly initialised network; the same ``seed`` gives ARL and NAL networks identical weights."""
    torch.manual_seed(seed)
    return build_network(arch, num_classes, in_chans, {"attention_residual": attention_residual})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.probe",
        description="Mean absolute response of every attention module's output, ARL vs NAL (docs/paper.md §6.3).",
    )
    parser.add_argument("--ckpt", action="append", default=[], help="a checkpoint (repeat for several networks)")
    parser.add_argument(
        "--arch", help=f"a freshly initialised network, e.g. resattn164_cifar ({len(resattn.VARIANTS)} known)"
    )
    parser.add_argument("--attention", nargs="+", default=["arl", "nal"], choices=["arl", "nal"])
    parser.add_argument("--data", default="random", help="'random', a conf/data/*.yaml name, or 'run' (ckpt's own)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="data config overrides")
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--image-size", type=int, help="side of random inputs (default: the variant's input size)")
    parser.add_argument("--num-classes", type=int, default=10, help="classes of a fresh network")
    parser.add_argument("--in-chans", type=int, default=3, help="input channels of a fresh network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", help="output folder (default: <run>/probe for --ckpt <run>/checkpoints/*.ckpt, logs/probe/<arch>)"
    )
    return parser


def _networks(args: argparse.Namespace) -> tuple[list[tuple[str, nn.Module]], str, int, int]:
    """``([(label, network)], arch, in_chans, num_classes)`` from ``--ckpt`` files or ``--arch``."""
    if bool(args.ckpt) == bool(args.arch):
        raise ValueError("give either --ckpt (one or more checkpoints) or --arch (a fresh network), not both/neither")
    if args.arch:
        nets = []
        for choice in args.attention:
            net = fresh_network(args.arch, choice == "arl", args.seed, args.num_classes, args.in_chans).train()
            nets.append((f"{args.arch} {choice.upper()} (init)", net))
        return nets, args.arch, args.in_chans, args.num_classes
    models = [load_classifier(path).eval() for path in args.ckpt]
    nets = [
        (f"{model.hparams.arch} ({Path(path).resolve().parent.parent.name})", model.net)
        for path, model in zip(args.ckpt, models, strict=True)
    ]
    first = models[0].hparams
    return nets, first.arch, first.in_chans, first.num_classes


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write ``<out>/responses.csv`` and ``<out>/responses.png``."""
    args = _parser().parse_args(argv)
    try:
        for path in args.ckpt:
            if not Path(path).is_file():
                raise FileNotFoundError(f"checkpoint {path} does not exist")
        networks, arch, in_chans, num_classes = _networks(args)
        if args.data == "random":
            size = args.image_size or resattn.get_variant(arch).input_size[-1]
            generator = torch.Generator().manual_seed(args.seed)
            images = torch.randn(args.num_images, in_chans, size, size, generator=generator)
        else:
            ckpt = Path(args.ckpt[0]) if args.ckpt else None
            datamodule = load_datamodule(ckpt, None if args.data == "run" else args.data, args.set)
            if datamodule.num_classes != num_classes:
                raise ValueError(
                    f"the networks have {num_classes} classes but data {args.data} has {datamodule.num_classes}"
                )
            images = split_images(datamodule, "val", args.num_images)[0]
        rows = probe(networks, images)
    except (ValueError, KeyError, OSError, CheckpointError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.out:
        out = Path(args.out)
    elif args.ckpt:
        out = default_output(Path(args.ckpt[0]), "probe")
    else:
        out = Path("logs") / "probe" / arch
    write_csv(rows, out / "responses.csv")
    plot_responses(rows, out / "responses.png")
    for label, _ in networks:
        values = [f"{r.mean_abs_response:.3g}" for r in rows if r.network == label]
        print(f"{label}: {' '.join(values)}")
    print(f"wrote {out / 'responses.csv'} and {out / 'responses.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
