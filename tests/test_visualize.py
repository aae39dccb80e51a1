"""Attention-mask grids (docs/paper.md §1.4): the arrays drawn are the model's own masks; command and callback files."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from files import write_tree
from helpers import quiet_trainer
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from test_probe import save_checkpoint

import lightning_modules.callbacks as callbacks_module
from analysis.masks import main
from analysis.wandb_offline import read_offline_run
from datamodules import SyntheticDataModule
from lightning_modules import ImageClassifier
from lightning_modules.callbacks import AttentionMaskLogger
from lightning_modules.mask_plots import mask_figure, mask_heatmaps, mask_statistics, module_label, stage_module

ARCH = "resattn_tiny_cifar"
DATA = ["--data", "synthetic", "--set", "image_size=16", "num_train_samples=64", "num_test_samples=16"]


def expected_heatmaps(model: ImageClassifier, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Channel-mean masks from capture_masks, upsampled to the image size: what the grid must show."""
    with torch.no_grad(), model.net.capture_masks() as masks:
        model(images)
    return {
        name: F.interpolate(m.mean(1, keepdim=True), size=images.shape[-2:], mode="bilinear")[:, 0]
        for name, m in masks.items()
    }


def drawn_heatmaps(fig: object, names: list[str], rows: int) -> dict[str, torch.Tensor]:
    """The heat-map arrays actually drawn in each module column of the grid (the overlay image of each panel)."""
    axes = fig.axes  # type: ignore[attr-defined]
    cols = 1 + len(names)
    return {
        name: torch.stack([torch.as_tensor(axes[i * cols + j].images[1].get_array()) for i in range(rows)])
        for j, name in enumerate(names, start=1)
    }


def test_grid_draws_the_models_own_masks() -> None:
    model = ImageClassifier(ARCH, num_classes=10).eval()
    images = torch.randn(3, 3, 16, 16)
    heatmaps = mask_heatmaps(model, images)
    expected = expected_heatmaps(model, images)
    assert list(heatmaps) == [name for name, _ in model.net.attention_modules()] == list(expected)
    for name in expected:
        assert heatmaps[name].shape == (3, 16, 16)
        torch.testing.assert_close(heatmaps[name], expected[name])
    fig = mask_figure(images, heatmaps, ["a", "b", "c"])
    for name, drawn in drawn_heatmaps(fig, list(heatmaps), 3).items():
        torch.testing.assert_close(drawn, expected[name])
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles[0] == "input" and titles[2] == "stage 2, module 1\nstages.1.attention.0"
    assert module_label("stages.0.attention.2") == "stage 1, module 3"


def test_grid_has_one_colour_scale_and_draws_the_boxes() -> None:
    """A flat mask must look flat: every panel shares the grid's range, shown on a colour bar, not its own."""
    model = ImageClassifier(ARCH, num_classes=10).train()
    images = torch.randn(2, 3, 16, 16)
    heatmaps = mask_heatmaps(model, images)
    low = min(heat.min().item() for heat in heatmaps.values())
    high = max(heat.max().item() for heat in heatmaps.values())
    boxes = torch.tensor([[2, 3, 10, 12], [0, 0, 16, 16]])
    fig = mask_figure(images, heatmaps, boxes=boxes)
    panels, bar = fig.axes[:8], fig.axes[8]
    for i, ax in enumerate(panels):
        if i % 4:  # a module's panel: the image, then the heat map on the shared scale
            assert ax.images[1].get_clim() == pytest.approx((low, high))
        (box,) = ax.patches
        x0, y0, x1, y1 = boxes[i // 4].tolist()
        assert box.get_xy() == (x0 - 0.5, y0 - 0.5) and (box.get_width(), box.get_height()) == (x1 - x0, y1 - y0)
    assert [t.get_text() for t in bar.get_xticklabels()] == [f"{low:.4g}", f"{high:.4g}"]
    assert "one scale for every panel" in bar.get_xlabel()
    with pytest.raises(ValueError, match=r"boxes must be \(2, 4\), one \(x0, y0, x1, y1\) per image, got \(4,\)"):
        mask_figure(images, heatmaps, boxes=boxes[0])


def test_command_writes_the_grid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_checkpoint(ImageClassifier(ARCH, num_classes=10), tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert main(["--ckpt", str(ckpt), *DATA, "--num-images", "2"]) == 0
    assert (tmp_path / "run" / "masks" / "attention_masks.png").read_bytes()[:4] == b"\x89PNG"
    write_tree(tmp_path / "mine", ["x"], per_class=2)
    out = tmp_path / "mine_masks"
    assert main(["--ckpt", str(ckpt), *DATA, "--images", str(tmp_path / "mine"), "--out", str(out)]) == 0
    assert "2 images x 3 attention modules" in capsys.readouterr().out
    assert (out / "attention_masks.png").is_file()
    # Bad inputs: a missing checkpoint, no data config, unknown data, wrong class count.
    assert main(["--ckpt", str(tmp_path / "nope.ckpt"), *DATA]) == 1
    assert "nope.ckpt does not exist" in capsys.readouterr().err
    assert main(["--ckpt", str(ckpt)]) == 1
    assert "--data" in capsys.readouterr().err
    assert main(["--ckpt", str(ckpt), "--data", "cifar11"]) == 1
    assert "known: cifar10, cifar100" in capsys.readouterr().err
    assert main(["--ckpt", str(ckpt), *DATA, "num_classes=4"]) == 1
    assert "trained for 10 classes but the data has 4" in capsys.readouterr().err


def test_callback_saves_and_logs_the_grid_of_a_fixed_val_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[tuple[torch.Tensor, dict[str, torch.Tensor]]] = []
    original = callbacks_module.mask_figure

    def spy(images: torch.Tensor, heatmaps: dict[str, torch.Tensor], *args: object) -> object:
        drawn.append((images, heatmaps))
        return original(images, heatmaps, *args)

    monkeypatch.setattr(callbacks_module, "mask_figure", spy)
    model = ImageClassifier(ARCH, num_classes=10, optimizer={"name": "sgd", "lr": 0.01})
    data = SyntheticDataModule(image_size=16, num_train_samples=96, batch_size=16, num_workers=0)
    callback = AttentionMaskLogger(every_n_epochs=1, num_images=3, save_dir=str(tmp_path / "masks"))
    loggers = [WandbLogger(save_dir=str(tmp_path), offline=True, project="test"), CSVLogger(tmp_path, name="csv")]
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_train_batches=2, callbacks=[callback], logger=loggers)
    try:
        trainer.fit(model, datamodule=data)
    finally:
        import wandb

        wandb.finish()
        wandb.teardown()  # waits for the W&B service to write the media files
    grids = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert grids == ["epoch0000-step0000002.png", "epoch0001-step0000004.png"]
    assert len(drawn) == 2 and torch.equal(drawn[0][0], drawn[1][0])  # the same fixed batch each time
    images = torch.stack([data.val_set[i][0] for i in range(3)])
    torch.testing.assert_close(drawn[1][0], images)
    model.eval()
    for name, heat in expected_heatmaps(model, images).items():  # the last grid shows the final weights' masks
        torch.testing.assert_close(drawn[1][1][name], heat)
    assert list((tmp_path / "wandb").glob("offline-run-*/files/media/images/attention_masks_*.png"))
    # the masks' statistics over the same batch, per epoch, in the CSV log and the W&B history alike
    stats = mask_statistics(model, images)
    assert [stage_module(name) for name in stats] == [(1, 1), (2, 1), (3, 1)]
    with (tmp_path / "csv" / "version_0" / "metrics.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row["mask/std/stage1_module1"]]
    history = [
        row
        for row in read_offline_run(next((tmp_path / "wandb").glob("offline-run-*"))).history
        if "mask/std/stage1_module1" in row
    ]
    assert len(rows) == len(history) == 2
    for name, values in stats.items():
        stage, module = stage_module(name)
        for key in AttentionMaskLogger.LOGGED_STATISTICS:
            column = f"mask/{key}/stage{stage}_module{module}"
            assert float(rows[-1][column]) == pytest.approx(values[key], rel=1e-5, abs=1e-7)
            assert history[-1][column] == pytest.approx(values[key], rel=1e-5, abs=1e-7)
    assert 0 < stats["stages.0.attention.0"]["std"] < 0.5
