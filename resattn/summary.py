"""Markdown summary of the registered variants: depth, parameters and MACs against the paper.

``python -m resattn.summary [--names resattn56 resattn92_cifar] [--output FILE]`` prints a table with one
row per variant: trunk depth and its formula (docs/paper.md §3.3: ``3(2p+t)·modules + 20`` for attention
networks, ``9n + 2`` for the pre-activation ResNet baselines), parameters, GMACs at the variant's native
input size (batch 1), and the paper's figures with the relative difference.

The paper's "FLOPs" are multiply-accumulates (docs/paper.md §3.2 reproduces Table 2's 6.2 G for Attention-56 as
6.27 GMACs), so our GMACs are compared with its GFLOPs directly. MACs are counted by
:class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products; it reports
2 FLOPs per MAC), so BN, ReLU, pooling and interpolation are not counted.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resattn.net import ResidualAttentionNet
from resattn.variants import VARIANTS, VariantSpec, get_variant


@dataclass(frozen=True)
class SummaryRow:
    """One variant's measured and published figures."""

    name: str
    family: str
    input_size: tuple[int, int, int]
    depth: int
    formula: str  # e.g. "3·(2·1+2)·3+20 = 56"
    formula_depth: int
    name_depth: int | None  # the number in the variant's name, if any
    params_m: float
    gmacs: float
    paper_params_m: float | None
    paper_gflops: float | None
    paper_source: str

    @property
    def depth_ok(self) -> bool:
        """Whether the spec's depth, the formula and the number in the name (if any) agree."""
        return self.depth == self.formula_depth and self.name_depth in (None, self.depth)

    @property
    def params_diff_pct(self) -> float | None:
        return relative_diff_pct(self.params_m, self.paper_params_m)

    @property
    def gmacs_diff_pct(self) -> float | None:
        return relative_diff_pct(self.gmacs, self.paper_gflops)


def relative_diff_pct(ours: float, paper: float | None) -> float | None:
    """``100 * (ours - paper) / paper``, or ``None`` when the paper gives no figure."""
    return None if paper is None else 100.0 * (ours - paper) / paper


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_gmacs(model: nn.Module, input_size: Sequence[int]) -> float:
    """Multiply-accumulates (in G) of one forward pass on a batch of one ``input_size = (C, H, W)`` image.

    Runs in eval mode under ``torch.no_grad()`` and restores the model's training flag afterwards.
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (C, H, W), got {tuple(input_size)}")
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None else torch.float32
    x = torch.zeros(1, *input_size, device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def depth_formula(spec: VariantSpec) -> tuple[str, int]:
    """docs/paper.md §3.3's formula for ``spec`` as text and value.

    Attention networks: ``3·(2p+t)·modules + 20``. Networks without attention modules (the ResNet
    baselines) with ``n`` units in each of their stages: ``9n + 2``; the plain CNN: one layer per unit, ``u + 2``.
    """
    if spec.num_modules:
        p, t, m = spec.num_pre_units, spec.num_trunk_units, spec.num_modules
        value = 3 * (2 * p + t) * m + 20
        return f"3·(2·{p}+{t})·{m}+20 = {value}", value
    per_stage = {s.units_before + s.units_after for s in spec.stages}
    layers = spec.layers_per_unit
    if len(spec.stages) == 3 and len(per_stage) == 1 and layers == 3:
        n = per_stage.pop()
        return f"9·{n}+2 = {9 * n + 2}", 9 * n + 2
    value = layers * spec.num_standalone_units + 2
    units = f"{layers}·{spec.num_standalone_units}" if layers != 1 else str(spec.num_standalone_units)
    return f"{units}+2 = {value}", value


def _depth_in_name(name: str) -> int | None:
    numbers = re.findall(r"\d+", name)
    return int(numbers[-1]) if numbers else None


def summary_row(name: str) -> SummaryRow:
    """Build variant ``name`` on the CPU and measure it (unknown names list the known ones)."""
    spec = get_variant(name)
    model = ResidualAttentionNet(spec)
    formula, formula_depth = depth_formula(spec)
    return SummaryRow(
        name=spec.name,
        family=spec.family,
        input_size=spec.input_size,
        depth=spec.depth,
        formula=formula,
        formula_depth=formula_depth,
        name_depth=_depth_in_name(spec.name),
        params_m=count_params(model) / 1e6,
        gmacs=count_gmacs(model, spec.input_size),
        paper_params_m=spec.paper_params_m,
        paper_gflops=spec.paper_gflops,
        paper_source=spec.paper_source,
    )


def summary_rows(names: Sequence[str] | None = None) -> list[SummaryRow]:
    """Rows for ``names`` (default: every registered variant, in table order).

    Every name is validated before anything is built, so a typo fails fast with the known names.
    """
    names = list(VARIANTS) if names is None else list(names)
    for name in names:
        get_variant(name)
    return [summary_row(name) for name in names]


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def format_markdown(rows: Sequence[SummaryRow]) -> str:
    """The rows as a GitHub-flavoured Markdown table (plus a short legend)."""
    header = [
        "variant",
        "family",
        "input",
        "depth",
        "3(2p+t)·modules+20 (9n+2)",
        "params (M)",
        "GMACs",
        "paper params (M)",
        "Δ params",
        "paper GFLOPs",
        "Δ FLOPs",
        "paper source",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [
            f"`{row.name}`",
            row.family,
            f"{row.input_size[1]}×{row.input_size[2]}",
            str(row.depth),
            f"{row.formula} {'✓' if row.depth_ok else '✗'}",
            f"{row.params_m:.2f}",
            f"{row.gmacs:.3f}",
            _fmt(row.paper_params_m, ".1f"),
            _fmt(row.params_diff_pct, "+.1f") + (" %" if row.params_diff_pct is not None else ""),
            _fmt(row.paper_gflops, ".1f"),
            _fmt(row.gmacs_diff_pct, "+.1f") + (" %" if row.gmacs_diff_pct is not None else ""),
            row.paper_source or "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "GMACs: multiply-accumulates of one forward pass at the variant's input size, batch 1 (convolutions "
        "and the classifier). The paper's FLOPs are multiply-accumulates too, so Δ FLOPs compares the two "
        "directly. Δ = (ours − paper) / paper.",
    ]
    off_size = [r.name for r in rows if r.family == "imagenet" and r.paper_gflops and r.input_size[1:] != (224, 224)]
    if off_size:
        lines += [
            "",
            "The paper's ImageNet FLOPs are for 224×224 input (docs/paper.md §7.9), so Δ FLOPs is not like for like "
            f"for {', '.join(f'`{n}`' for n in off_size)}.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resattn.summary", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--names",
        nargs="+",
        metavar="NAME",
        help="variants to summarise (space- or comma-separated; default: all registered variants)",
    )
    parser.add_argument("--output", type=Path, help="also write the Markdown table to this file")
    args = parser.parse_args(argv)
    names = None if args.names is None else [n for arg in args.names for n in arg.split(",") if n]
    try:
        rows = summary_rows(names)
    except KeyError as err:
        parser.error(str(err.args[0]))
    table = format_markdown(rows)
    sys.stdout.write(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
