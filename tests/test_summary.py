"""resattn.summary: the variant table (depth check, params, GMACs vs the paper) and its command line."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import resattn
from resattn import summary
from resattn.net import ResidualAttentionNet

REPO = Path(__file__).resolve().parents[1]


def macs_by_hooks(model: nn.Module, input_size: tuple[int, int, int]) -> float:
    """Independent MAC count: every conv output element costs (C_in / groups) * k_h * k_w MACs, a linear
    layer in * out."""
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.weight[0].numel()

    def linear_hook(m: nn.Linear, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() * m.in_features

    handles = [
        m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_size))
    for h in handles:
        h.remove()
    return total / 1e9


def test_summary_rows_numbers() -> None:
    rows = summary.summary_rows(["resattn_tiny_cifar", "resattn_resnet164_cifar"])
    assert [r.name for r in rows] == ["resattn_tiny_cifar", "resattn_resnet164_cifar"]
    tiny, resnet = rows

    assert (tiny.family, tiny.input_size, tiny.depth, tiny.formula_depth) == ("cifar", (3, 32, 32), 56, 56)
    assert tiny.formula == "3·(2·1+2)·3+20 = 56" and tiny.name_depth is None and tiny.depth_ok
    model = ResidualAttentionNet("resattn_tiny_cifar")
    assert tiny.params_m == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6, abs=0)
    assert tiny.gmacs == pytest.approx(macs_by_hooks(model, (3, 32, 32)), rel=1e-9)
    assert tiny.paper_params_m is None and tiny.params_diff_pct is None and tiny.gmacs_diff_pct is None

    assert (resnet.depth, resnet.formula, resnet.name_depth, resnet.depth_ok) == (164, "9·18+2 = 164", 164, True)
    assert resnet.params_m == pytest.approx(1.703, abs=1e-3)
    assert resnet.paper_params_m == 1.7 and resnet.paper_source == "Table 6"
    assert resnet.params_diff_pct == pytest.approx(100 * (resnet.params_m - 1.7) / 1.7)
    assert resnet.gmacs == pytest.approx(macs_by_hooks(ResidualAttentionNet(resnet.name), (3, 32, 32)), rel=1e-9)


def test_count_gmacs_restores_mode_and_matches_hooks() -> None:
    model = ResidualAttentionNet("resattn_tiny").train()
    value = summary.count_gmacs(model, (3, 48, 40))
    assert model.training
    assert value == pytest.approx(macs_by_hooks(model, (3, 48, 40)), rel=1e-9)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        summary.count_gmacs(model, (48, 40))
    assert summary.count_params(nn.Linear(3, 4)) == 16


def test_depth_formula_and_relative_diff() -> None:
    assert summary.depth_formula(resattn.get_variant("resattn452_cifar")) == ("3·(2·2+4)·18+20 = 452", 452)
    assert summary.depth_formula(resattn.get_variant("resattn_resnet1001_cifar")) == ("9·111+2 = 1001", 1001)
    assert summary.relative_diff_pct(10.5, 10.0) == pytest.approx(5.0)
    assert summary.relative_diff_pct(1.0, None) is None


def test_depth_check_flags_a_mismatch() -> None:
    row = summary.summary_rows(["resattn_tiny_cifar"])[0]
    bad = summary.SummaryRow(**{**row.__dict__, "name": "resattn57_cifar", "name_depth": 57})
    assert not bad.depth_ok
    assert "✗" in summary.format_markdown([bad]) and "✓" in summary.format_markdown([row])


def test_format_markdown() -> None:
    row = summary.SummaryRow(
        name="resattn56",
        family="imagenet",
        input_size=(3, 224, 224),
        depth=56,
        formula="3·(2·1+2)·3+20 = 56",
        formula_depth=56,
        name_depth=56,
        params_m=31.810728,
        gmacs=6.270836736,
        paper_params_m=31.9,
        paper_gflops=6.2,
        paper_source="Table 2",
    )
    text = summary.format_markdown([row])
    lines = text.splitlines()
    header, rule, body = lines[:3]
    assert header.count("|") == rule.count("|") == body.count("|") == 13
    cells = [c.strip() for c in body.strip("|").split("|")]
    assert cells == [
        "`resattn56`",
        "imagenet",
        "224×224",
        "56",
        "3·(2·1+2)·3+20 = 56 ✓",
        "31.81",
        "6.271",
        "31.9",
        "-0.3 %",
        "6.2",
        "+1.1 %",
        "Table 2",
    ]
    assert "multiply-accumulates" in text


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown resattn variant 'resattn57'.*resattn56"):
        summary.summary_rows(["resattn_tiny_cifar", "resattn57"])


def test_command_line_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "summary.md"
    result = subprocess.run(
        [sys.executable, "-m", "resattn.summary", "--names", "resattn_tiny_cifar", "--output", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    text = out.read_text(encoding="utf-8")
    assert result.stdout == text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) == 1 and rows[0].startswith("| `resattn_tiny_cifar` | cifar | 32×32 | 56 |")
    assert "0.07" in rows[0] and "✓" in rows[0]


def test_command_line_rejects_unknown_names() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "resattn.summary", "--names", "resattn_tiny_cifar,nope"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "unknown resattn variant 'nope'" in result.stderr and "resattn92_cifar" in result.stderr


def test_summary_imports_only_torch_timm_resattn_and_stdlib() -> None:
    tree = ast.parse(Path(summary.__file__).read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots - set(sys.stdlib_module_names) <= {"torch", "timm", "resattn"}
