"""Trained weights as timm pretrained tags: exported from a training checkpoint, loaded by timm offline, evaluated by
eval.py without a checkpoint."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import ROOT, SMOKE, randomize_bn, run_script

from analysis.export_weights import main as export_main

DATA = ["data=synthetic", "data.image_size=16", "data.num_train_samples=192", "data.num_test_samples=64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The best checkpoint of a real short training run (synthetic 16 px data)."""
    cwd = tmp_path_factory.mktemp("run")
    run_script("train.py", *SMOKE, "logger=csv", cwd=cwd)
    return next(cwd.glob("logs/train/runs/*/checkpoints/best-*.ckpt"))


def timm_outputs(weights_dir: Path, name: str, images: Path) -> dict:
    """In a fresh process with the weights folder set: what timm reports for ``name`` and its outputs on images."""
    code = f"""
import json, timm, torch, resattn
net = timm.create_model({name!r}, pretrained=True).eval()
cfg = net.pretrained_cfg
with torch.no_grad():
    out = net(torch.load({str(images)!r}))
torch.save(out, {str(images.with_suffix(".out"))!r})
print(json.dumps(dict(listed=timm.list_pretrained("resattn*"), mean=cfg["mean"], std=cfg["std"],
                      input_size=cfg["input_size"], labels=cfg["label_names"], classes=cfg["num_classes"])))
"""
    env = {"RESATTN_WEIGHTS_DIR": str(weights_dir), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_exported_weights_load_through_timm_and_eval(trained: Path, tmp_path: Path) -> None:
    weights_dir = tmp_path / "weights"
    assert export_main([str(trained), "--tag", "smoke", "--out", str(weights_dir)]) == 0
    described = json.loads((weights_dir / "resattn_tiny_cifar.smoke.json").read_text())
    run = trained.parent.parent
    assert described["test_top1"] == json.loads((run / "run.json").read_text())["finished"]["metrics"]["test/acc1"]
    assert described["input_size"] == [3, 16, 16] and described["label_names"][:2] == ["class_0", "class_1"]
    # the precision its test top-1 was measured in (this machine's default: bf16 only where the CPU computes it)
    finished = json.loads((run / "run.json").read_text())["finished"]
    assert described["test_precision"] == finished["precision"] and finished["precision"] in ("32-true", "bf16-mixed")
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert described["source"].startswith("python train.py " + " ".join(overrides))
    assert export_main([str(run), "--tag", "from_run", "--out", str(weights_dir)]) == 0  # the run's best checkpoint
    from_run = json.loads((weights_dir / "resattn_tiny_cifar.from_run.json").read_text())
    assert from_run["source"] == described["source"]
    # a run directory copied from another machine: run.json's path is not here, its own checkpoints/ are used
    moved = shutil.copytree(run, tmp_path / "moved")
    record = json.loads((moved / "run.json").read_text())
    record["finished"]["best_checkpoint"] = f"/elsewhere/checkpoints/{trained.name}"
    del record["finished"]["precision"]  # a run from before precisions were recorded: its CSV log's is read
    (moved / "run.json").write_text(json.dumps(record))
    assert export_main([str(moved), "--tag", "moved", "--out", str(weights_dir)]) == 0
    moved_tag = json.loads((weights_dir / "resattn_tiny_cifar.moved.json").read_text())
    assert moved_tag["test_precision"] == finished["precision"]
    exported = [torch.load(weights_dir / f"resattn_tiny_cifar.{tag}.pth") for tag in ("smoke", "from_run", "moved")]
    assert all(
        torch.equal(a, b) for other in exported[1:] for a, b in zip(exported[0].values(), other.values(), strict=True)
    )

    images = tmp_path / "images.pt"
    batch = torch.randn(4, 3, 16, 16)
    torch.save(batch, images)
    report = timm_outputs(weights_dir, "resattn_tiny_cifar.smoke", images)
    assert "resattn_tiny_cifar.smoke" in report["listed"]
    assert report["classes"] == 10 and report["input_size"] == [3, 16, 16] and len(report["labels"]) == 10
    assert report["mean"] == pytest.approx(described["mean"]) and report["std"] == pytest.approx(described["std"])
    state = torch.load(trained, weights_only=True)
    from lightning_modules import ImageClassifier

    model = ImageClassifier(**state["hyper_parameters"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.load(images.with_suffix(".out")), model.net(batch))

    # eval.py with the tag and with the checkpoint it came from: the same accuracy, no checkpoint needed.
    # The tag says it was measured in bf16: evaluating it in full precision says that the numbers may differ.
    env = {"RESATTN_WEIGHTS_DIR": str(weights_dir)}
    smoke = weights_dir / "resattn_tiny_cifar.smoke.json"
    smoke.write_text(json.dumps({**described, "test_precision": "bf16-mixed"}))
    common = [*DATA, "data.noise=0.5", "trainer.precision=32-true"]
    tag = run_script("eval.py", "pretrained=resattn_tiny_cifar.smoke", *common, cwd=tmp_path, env=env)
    assert "was measured in bf16-mixed; this evaluation runs in 32-true" in tag.stdout + tag.stderr
    assert "trainer.precision=bf16-mixed reproduces it" in tag.stdout + tag.stderr
    run_script("eval.py", f"ckpt_path={trained}", *common, cwd=tmp_path, env=env)
    written = sorted((tmp_path / "logs" / "eval" / "runs").glob("*/*/eval_results.json"))
    results = [json.loads(path.read_text()) for path in written]
    assert [r["precision"] for r in results] == ["32-true", "32-true"]
    by_source = {("pretrained" in r): r["sizes"]["16"]["test/acc1"] for r in results}
    assert by_source[True] == pytest.approx(by_source[False], abs=1e-6)


def test_eval_needs_one_source_and_names_the_tags(tmp_path: Path) -> None:
    proc = run_script("eval.py", *DATA, cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "eval.py needs exactly one of ckpt_path=" in proc.stderr and "pretrained=<variant>.<tag>" in proc.stderr
    proc = run_script("eval.py", "pretrained=resattn56_cifar.nope", *DATA, cwd=tmp_path, check=False)
    assert "unknown pretrained weights 'resattn56_cifar.nope'; available:" in proc.stderr


def test_export_of_an_unfinished_run_says_how_to_finish_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert export_main([str(tmp_path), "--tag", "x", "--out", str(tmp_path / "w")]) == 1
    assert "is not a run directory of train.py (no run.json)" in capsys.readouterr().err
    (run / "run.json").write_text(json.dumps({"wandb_id": "abc"}))
    assert export_main([str(run), "--tag", "x", "--out", str(tmp_path / "w")]) == 1
    assert "has not finished its training and test" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_a_tag_builds_the_network_its_weights_were_trained_as(tmp_path: Path) -> None:
    """A tag of a NAL network (same weight shapes as ARL, another function) comes back from
    ``timm.create_model(tag, pretrained=True)`` as NAL: the tag's network options are the builder's defaults."""
    import timm

    from resattn.pretrained import Weights

    torch.manual_seed(0)
    nal = randomize_bn(timm.create_model("resattn_tiny_cifar", attention_residual=False, widths=[8, 16, 32]))
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.save(nal.state_dict(), weights_dir / "resattn_tiny_cifar.nal.pth")
    description = Weights(
        "resattn_tiny_cifar",
        "nal",
        weights_dir / "resattn_tiny_cifar.nal.pth",
        10,
        (3, 16, 16),
        (0.5,) * 3,
        (0.25,) * 3,
        label_names=tuple(f"class_{i}" for i in range(10)),
        net={"attention_residual": False, "widths": [8, 16, 32]},
    ).describe()
    (weights_dir / "resattn_tiny_cifar.nal.json").write_text(json.dumps(description))
    images = tmp_path / "images.pt"
    batch = torch.randn(2, 3, 16, 16)
    torch.save(batch, images)
    timm_outputs(weights_dir, "resattn_tiny_cifar.nal", images)
    with torch.no_grad():
        expected = nal(batch)
        arl = timm.create_model("resattn_tiny_cifar", widths=[8, 16, 32])
        arl.load_state_dict(nal.state_dict())
        assert not torch.allclose(arl.eval()(batch), expected, atol=1e-3)
    torch.testing.assert_close(torch.load(images.with_suffix(".out")), expected)
