"""Export a network for deployment: a ``torch.export`` program (``.pt2``) or an ONNX model, with the batch size
and the input height and width dynamic.

::

    python -m resattn.export resattn56 --format onnx --out att56.onnx --check
    python -m resattn.export --checkpoint logs/.../checkpoints/best-*.ckpt --format torch-export --out net.pt2

The weights come from a training checkpoint (``--checkpoint``: Lightning's ``.ckpt``, whose hyper-parameters name
the variant and its options, or a plain state dict), from a pretrained tag (``resattn56_cifar.<tag> --pretrained``)
or are fresh. Both formats trace the network once with :func:`torch.export.export`; the exported model takes any
batch size (1 included) and any height and width from the network's minimum (its input check becomes the lower
bound). ONNX uses PyTorch's dynamo-based exporter, which needs ``onnx`` and ``onnxscript`` (``pip install -e
".[export]"``, which also brings ``onnxruntime`` for ``--check``). ``--check`` runs the exported model against the
eager network at the example size and at an odd, non-square size and prints the largest absolute difference.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
import torch.fx.experimental._config as fx_config
from torch import nn
from torch.export import Dim, ExportedProgram

from resattn.checkpoints import network_from_file
from resattn.net import ResidualAttentionNet

FORMATS = ("onnx", "torch-export")


def load_network(
    variant: str | None = None, checkpoint: str | Path | None = None, pretrained: bool = False, **options: Any
) -> ResidualAttentionNet:
    """The network to export, in eval mode: the weights of ``checkpoint`` (see
    :func:`resattn.checkpoints.network_from_file`), else ``variant`` (a timm name, optionally ``.tag``) fresh or
    ``pretrained``; ``options`` go to ``timm.create_model``."""
    if checkpoint is not None:
        if pretrained:
            raise ValueError("give either --checkpoint or --pretrained: both name the weights")
        return network_from_file(checkpoint, variant, **options)
    if variant is None:
        raise ValueError("name the variant to export (e.g. resattn56), or give a checkpoint that names it")
    return timm.create_model(variant, pretrained=pretrained, **options).eval()


def dynamic_shapes() -> dict[str, dict[int, Any]]:
    """Batch, height and width dynamic; export finds their ranges (the input check bounds the size from below)."""
    return {"x": {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}}


@contextmanager
def export_tracing() -> Iterator[None]:
    """Tracing settings for export.

    PyTorch's (experimental) size-oblivious tracing: without it export assumes every dynamic size is >= 2 like
    the example's, which excludes batch 1 and the inputs whose deepest mask level is 1 pixel. And a quieter
    shape solver: Caffe's ceil-mode pooling asks whether its last window starts inside the input, which always
    holds here (stride 2, no padding) but which sympy cannot simplify; PyTorch logs each failed attempt with a
    traceback and goes on.
    """
    solver_log = logging.getLogger("torch.fx.experimental.symbolic_shapes")
    level = solver_log.level
    solver_log.setLevel(logging.ERROR)
    try:
        with fx_config.patch(backed_size_oblivious=True):
            yield
    finally:
        solver_log.setLevel(level)


def export_program(net: nn.Module, example: torch.Tensor) -> ExportedProgram:
    """``torch.export`` of ``net`` (in eval mode) with a dynamic batch size, height and width."""
    with export_tracing():
        return torch.export.export(net.eval(), (example,), dynamic_shapes=dynamic_shapes())


def export_onnx(program: ExportedProgram, path: str | Path) -> None:
    """The ONNX model of an exported program (dynamo-based exporter) at ``path``: input ``images``, output
    ``output``, with the program's dynamic batch, height and width."""
    with export_tracing():
        onnx_program = torch.onnx.export(
            program, input_names=["images"], output_names=["output"], dynamo=True, verbose=False
        )
    onnx_program.save(str(path))


def onnx_runner(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """Run an ONNX model with ONNX Runtime on the CPU, tensors in and out."""
    import onnxruntime  # the [export] extra; imported here so that resattn itself needs only torch and timm

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def check_sizes(example: torch.Tensor, min_size: int) -> list[tuple[int, int, int]]:
    """Two (batch, height, width) to compare at: the example's, and batch 1 at an odd non-square size."""
    batch, _, height, width = example.shape
    odd = (max(height + height // 4, min_size) | 1, max(width - width // 4, min_size) | 1)
    return [(batch, height, width), (1, *odd)]


def max_abs_diff(
    run: Callable[[torch.Tensor], torch.Tensor], net: nn.Module, sizes: Sequence[tuple[int, int, int]]
) -> list[tuple[tuple[int, int, int], float, float]]:
    """For each (batch, height, width): the largest ``|exported - eager|`` and the largest ``|eager|``."""
    results = []
    generator = torch.Generator().manual_seed(0)
    for batch, height, width in sizes:
        x = torch.randn(batch, net.in_chans, height, width, generator=generator)
        with torch.no_grad():
            expected = net(x)
            got = run(x)
        results.append(((batch, height, width), (got - expected).abs().max().item(), expected.abs().max().item()))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m resattn.export", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("variant", nargs="?", help="timm name, e.g. resattn56 (default: the checkpoint's)")
    parser.add_argument("--checkpoint", help="Lightning .ckpt or state dict with the weights")
    parser.add_argument("--pretrained", action="store_true", help="load the variant's pretrained tag")
    parser.add_argument("--format", choices=FORMATS, required=True)
    parser.add_argument("--out", required=True, type=Path, help="file to write (.onnx or .pt2)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="example input size (default: cfg)")
    parser.add_argument("--check", action="store_true", help="compare with the eager network at two sizes")
    args = parser.parse_args(argv)

    try:
        net = load_network(args.variant, args.checkpoint, args.pretrained)
    except (ValueError, RuntimeError, OSError) as err:
        parser.error(str(err))
    height, width = args.size or net.pretrained_cfg["input_size"][-2:]
    example = torch.randn(2, net.in_chans, height, width)
    program = export_program(net, example)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.format == "torch-export":
        torch.export.save(program, args.out)
        run = program.module() if args.check else None
    else:
        export_onnx(program, args.out)
        run = onnx_runner(args.out) if args.check else None
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB): input (batch, {net.in_chans}, height, width), "
        f"any batch, height and width >= {net.min_input_size()}"
    )
    if args.check:
        for (batch, h, w), diff, scale in max_abs_diff(run, net, check_sizes(example, net.min_input_size())):
            print(f"  batch {batch}, {h}x{w}: max |exported - eager| = {diff:.3g} (max |eager| = {scale:.3g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
