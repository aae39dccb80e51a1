"""Export for deployment (resattn/export.py): torch.export and ONNX with a dynamic batch and input size.

The CIFAR and ImageNet Attention-56 are exported once each (one trace serves both formats) and run against the
eager network at two sizes, one odd and non-square, and at other batch sizes. Their BN statistics are first set
from a batch, as after training, so the outputs have a realistic scale. The ONNX tests need the ``export`` extra
(``pip install -e ".[export]"``; scripts/setup.sh installs it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from resattn.checkpoints import CheckpointError
from resattn.export import check_sizes, export_onnx, export_program, load_network, main, max_abs_diff, onnx_runner

# (variant, example input (N, C, H, W), (batch, height, width) to compare at, the odd size among them)
CASES = {
    "resattn56_cifar": ((2, 3, 32, 32), [(2, 32, 32), (3, 37, 45), (1, 8, 8)]),
    "resattn56": ((2, 3, 224, 224), [(2, 224, 224), (1, 161, 193), (3, 31, 32)]),
}
ONNX_MISSING = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
needs_onnx = pytest.mark.skipif(
    bool(ONNX_MISSING), reason=f'{", ".join(ONNX_MISSING)} not installed: pip install -e ".[export]"'
)


def calibrated(name: str) -> nn.Module:
    """A fresh network whose BN statistics are those of one batch of 4 (cumulative average, one step)."""
    torch.manual_seed(0)
    net = timm.create_model(name)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    size = net.pretrained_cfg["input_size"][-1]
    with torch.no_grad():
        net.train()(torch.randn(4, 3, size, size))
    return net.eval()


@pytest.fixture(scope="module", params=list(CASES))
def exported(request: pytest.FixtureRequest) -> tuple[str, nn.Module, torch.export.ExportedProgram]:
    name = request.param
    net = calibrated(name)
    return name, net, export_program(net, torch.randn(CASES[name][0]))


def report(label: str, results: list[tuple[tuple[int, int, int], float, float]]) -> None:
    for (batch, h, w), diff, scale in results:
        print(f"{label}: batch {batch}, {h}x{w}: max |exported - eager| = {diff:.3g} (max |eager| = {scale:.3g})")


def assert_within_float_tolerance(results: list[tuple[tuple[int, int, int], float, float]]) -> None:
    """Float32 round-off through ~60 layers: a few units in 1e-6 of the output's scale."""
    for size, diff, scale in results:
        assert diff <= 1e-5 * max(scale, 1.0), (size, diff, scale)


@pytest.mark.slow
def test_torch_export_serves_any_batch_and_size(exported: tuple, tmp_path: Path) -> None:
    name, net, program = exported
    batch, height, width = (str(s) for s in program.range_constraints.values())
    assert batch.startswith("VR[0,") and height == width == f"VR[{net.min_input_size()}, int_oo]"
    path = tmp_path / f"{name}.pt2"
    torch.export.save(program, path)
    results = max_abs_diff(torch.export.load(path).module(), net, CASES[name][1])
    report(f"torch.export {name}", results)
    assert_within_float_tolerance(results)
    with pytest.raises(AssertionError, match=rf"x.size\(\)\[2\] >= {net.min_input_size()}"):  # too small
        program.module()(torch.randn(1, 3, net.min_input_size() - 1, 64))


@pytest.mark.slow
@needs_onnx
def test_onnx_runtime_matches_pytorch(exported: tuple, tmp_path: Path) -> None:
    name, net, program = exported
    path = tmp_path / f"{name}.onnx"
    export_onnx(program, path)
    results = max_abs_diff(onnx_runner(path), net, CASES[name][1])
    report(f"ONNX Runtime {name}", results)
    assert_within_float_tolerance(results)


def test_check_sizes_include_an_odd_non_square_one() -> None:
    assert check_sizes(torch.empty(2, 3, 224, 224), 31) == [(2, 224, 224), (1, 281, 169)]
    assert check_sizes(torch.empty(2, 3, 8, 8), 8) == [(2, 8, 8), (1, 11, 9)]


def test_load_network_from_a_lightning_checkpoint_and_a_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("resattn_tiny_cifar", num_classes=4, in_chans=1, mask_type="spatial")
    lightning = {
        "state_dict": {f"net.{k}": v for k, v in source.state_dict().items()} | {"val_acc1_best": torch.ones(())},
        "hyper_parameters": {
            "arch": "resattn_tiny_cifar",
            "num_classes": 4,
            "in_chans": 1,
            "net": {"mask_type": "spatial"},
        },
    }
    torch.save(lightning, tmp_path / "last.ckpt")
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        expected = source.eval()(x)
        from_lightning = load_network(checkpoint=tmp_path / "last.ckpt")
        torch.testing.assert_close(from_lightning(x), expected, rtol=0, atol=0)
        from_state = load_network("resattn_tiny_cifar", tmp_path / "weights.pth", mask_type="spatial")
        torch.testing.assert_close(from_state(x), expected, rtol=0, atol=0)
    assert not from_lightning.training and from_state.get_classifier().out_features == 4
    with pytest.raises(ValueError, match="a plain state dict: name its variant"):
        load_network(checkpoint=tmp_path / "weights.pth")


@pytest.mark.slow
@needs_onnx
def test_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny.onnx"
    assert main(["resattn_tiny_cifar", "--format", "onnx", "--out", str(out), "--size", "24", "24", "--check"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and f"wrote {out}" in printed and "height and width >= 8" in printed
    diffs = [float(line.split("= ")[1].split()[0]) for line in printed.splitlines() if "max |exported" in line]
    assert len(diffs) == 2 and max(diffs) < 1e-3
    assert "batch 1, 31x19" in printed  # the odd, non-square size


def test_load_network_reads_checkpoints_and_refuses_bad_files(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("resattn_tiny_cifar", num_classes=4, in_chans=1, mask_type="channel").eval()
    weights = {f"net.{k}": v for k, v in source.state_dict().items()}
    hparams = {"arch": "resattn_tiny_cifar", "num_classes": 4, "in_chans": 1, "net": {"mask_type": "channel"}}
    torch.save({"state_dict": weights, "hyper_parameters": hparams}, tmp_path / "run.ckpt")
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(load_network(checkpoint=tmp_path / "run.ckpt")(x), source(x), rtol=0, atol=0)

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((tmp_path / "run.ckpt").read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        load_network(checkpoint=truncated)

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"state_dict": {}, "payload": Exploit()}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil.ckpt: it would import and call"):
        load_network(checkpoint=tmp_path / "evil.ckpt")
    assert not (tmp_path / "pwned").exists()

    torch.save({"optimizer": {}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"neither a training checkpoint .* nor a network's state dict"):
        load_network(checkpoint=tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"does not fit resattn_tiny_cifar .*'in_chans': 3.*stem\.conv\.weight"):
        load_network(checkpoint=tmp_path / "run.ckpt", in_chans=3)
    with pytest.raises(ValueError, match="either --checkpoint or --pretrained"):
        load_network(checkpoint=tmp_path / "run.ckpt", pretrained=True)


def test_export_command_reports_a_damaged_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(SystemExit) as stop:
        main(["--checkpoint", str(damaged), "--format", "onnx", "--out", str(tmp_path / "x.onnx")])
    assert stop.value.code == 2
    assert f"cannot read checkpoint {damaged}: it is truncated" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
