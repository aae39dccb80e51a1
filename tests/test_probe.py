"""The NAL response-vanishing probe (docs/paper.md §6.3): values, files, and equality with a hook-free forward."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning
import pytest
import torch

from analysis.probe import fresh_network, main, module_responses, probe
from lightning_modules import ImageClassifier

ARCH = "resattn_tiny_cifar"


def save_checkpoint(model: ImageClassifier, path: Path) -> Path:
    """A minimal Lightning checkpoint of ``model`` (what ModelCheckpoint writes, less the trainer state)."""
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def direct_responses(net: torch.nn.Module, images: torch.Tensor) -> list[float]:
    """Mean |output| of every attention module, computed by running the stages by hand (no hooks)."""
    values = []
    with torch.no_grad():
        x = net.stem(images)
        for stage in net.stages:
            x = stage.units_before(x)
            for module in stage.attention:
                x = module(x)
                values.append(x.abs().mean().item())
            x = stage.units_after(x)
    return values


@pytest.mark.parametrize("residual", [True, False])
def test_hooks_measure_what_a_direct_forward_gives(residual: bool) -> None:
    net = fresh_network(ARCH, residual, seed=0, num_classes=10, in_chans=3).eval()
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    measured = module_responses(net, images)
    assert [name for name, _ in measured] == ["stages.0.attention.0", "stages.1.attention.0", "stages.2.attention.0"]
    assert [v for _, v in measured] == pytest.approx(direct_responses(net, images), rel=1e-6)
    assert not net.stages[0].attention[0]._forward_hooks  # hooks removed


def test_probe_rows_and_same_weights_for_arl_and_nal() -> None:
    arl = fresh_network(ARCH, True, seed=0, num_classes=10, in_chans=3).eval()
    nal = fresh_network(ARCH, False, seed=0, num_classes=10, in_chans=3).eval()
    assert all(torch.equal(a, b) for a, b in zip(arl.state_dict().values(), nal.state_dict().values(), strict=True))
    rows = probe([("a", arl), ("n", nal)], torch.randn(2, 3, 16, 16))
    assert [(r.network, r.attention, r.stage, r.position) for r in rows[:3]] == [
        ("a", "ARL", 1, 1),
        ("a", "ARL", 2, 2),
        ("a", "ARL", 3, 3),
    ]
    assert {r.attention for r in rows[3:]} == {"NAL"}
    with pytest.raises(ValueError, match="no attention modules"):
        probe([("resnet", fresh_network("resattn_resnet164_cifar", True, 0, 10, 3))], torch.randn(1, 3, 8, 8))


def test_command_writes_csv_and_plot_equal_to_a_direct_computation(tmp_path: Path) -> None:
    out = tmp_path / "probe"
    assert main(["--arch", ARCH, "--image-size", "16", "--num-images", "4", "--seed", "1", "--out", str(out)]) == 0
    with (out / "responses.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["attention"] for r in rows] == ["ARL"] * 3 + ["NAL"] * 3
    assert (out / "responses.png").read_bytes()[:4] == b"\x89PNG"
    images = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for residual, kind in ((True, "ARL"), (False, "NAL")):
        net = fresh_network(ARCH, residual, seed=1, num_classes=10, in_chans=3).train()  # fresh: batch statistics
        expected = direct_responses(net, images)
        assert [float(r["mean_abs_response"]) for r in rows if r["attention"] == kind] == pytest.approx(expected)


def test_command_on_checkpoints_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = []
    for residual in (True, False):
        model = ImageClassifier(ARCH, num_classes=10, net={"attention_residual": residual})
        paths.append(tmp_path / f"{residual}.ckpt")
        save_checkpoint(model, paths[-1])
    out = tmp_path / "out"
    assert main(["--ckpt", str(paths[0]), "--ckpt", str(paths[1]), "--image-size", "16", "--out", str(out)]) == 0
    with (out / "responses.csv").open() as f:
        assert [r["attention"] for r in csv.DictReader(f)] == ["ARL"] * 3 + ["NAL"] * 3
    assert main(["--ckpt", str(tmp_path / "missing.ckpt")]) == 1
    assert "missing.ckpt does not exist" in capsys.readouterr().err
    assert main(["--ckpt", str(paths[0]), "--arch", ARCH]) == 1
    assert "either --ckpt" in capsys.readouterr().err


def test_default_output_is_the_runs_folder_or_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never a probe/ folder in whatever directory the command runs from."""
    monkeypatch.chdir(tmp_path)
    assert main(["--arch", ARCH, "--image-size", "16", "--num-images", "2"]) == 0
    assert (tmp_path / "logs" / "probe" / ARCH / "responses.csv").is_file()
    run = tmp_path / "logs" / "train" / "runs" / "x"
    (run / "checkpoints").mkdir(parents=True)
    save_checkpoint(ImageClassifier(ARCH, num_classes=10), run / "checkpoints" / "last.ckpt")
    assert main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--image-size", "16", "--num-images", "2"]) == 0
    assert (run / "probe" / "responses.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]
