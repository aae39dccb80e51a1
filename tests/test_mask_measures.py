"""Mask measures (analysis/mask_effects.py): importance by replacing masks, localisation against boxes, amplitude of
the logits; and the command (analysis/mask_measures.py) on a real checkpoint and a pretrained tag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import quiet_trainer
from test_probe import save_checkpoint
from torch.utils.data import DataLoader, TensorDataset

import analysis.masks as masks_command
from analysis.mask_effects import amplitude, importance, localisation
from analysis.mask_measures import batch_size_without_singles, main
from analysis.paired import mcnemar_p
from datamodules import SyntheticDataModule
from lightning_modules import ImageClassifier
from lightning_modules.checkpoint_loading import load_classifier

ARCH = "resattn_tiny_cifar"
DATA = ["--data", "synthetic", "--set", "image_size=16", "num_train_samples=32", "num_test_samples=11"]
MODULES = ["stages.0.attention.0", "stages.1.attention.0", "stages.2.attention.0"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny(**net: object) -> ImageClassifier:
    return ImageClassifier(ARCH, num_classes=10, net=net or None).eval()


def loader_of(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 5) -> DataLoader:
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def own_predictions(model: ImageClassifier, images: torch.Tensor) -> torch.Tensor:
    """Labels that the real network gets all right: any changed prediction then shows as an error."""
    with torch.no_grad():
        return model(images).argmax(dim=1)


def test_constant_masks_cost_nothing() -> None:
    model = tiny()
    for _, module in model.net.attention_modules():  # logits 0: M = sigmoid(0) = 0.5 everywhere, for every image
        torch.nn.init.zeros_(module.mask.tail[-1].weight)
    images, labels = torch.randn(12, 3, 16, 16), torch.randint(0, 10, (12,))
    with torch.no_grad():
        real = (model(images).argmax(dim=1) == labels).float().mean().item()
    found = importance(model, loader_of(images, labels)).summary()
    assert found["images"] == 12 and found["top1"] == pytest.approx(100 * real)
    assert list(found["interventions"]) == [*(f"mean:{name}" for name in MODULES), "mean:all", "exchange:all"]
    for row in found["interventions"].values():
        assert row["top1"] == found["top1"] and row["change"] == 0
        assert row["only_real"] == row["only_intervened"] == 0 and row["p_value"] == 1.0


def test_exchanging_image_dependent_masks_changes_predictions() -> None:
    model = tiny()
    for module in model.modules():  # BN statistics of one batch: fresh running statistics saturate every mask
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(64, 3, 16, 16))
    model.eval()
    torch.nn.init.normal_(model.net.head.fc.weight)  # a classifier that tells the images apart
    images = torch.randn(32, 3, 16, 16)
    labels = own_predictions(model, images)
    result = importance(model, loader_of(images, labels))
    assert bool(result.real.all())
    exchanged = result.interventions["exchange:all"]
    # image i got image i-1's masks (within its batch of 5), every module at once
    expected = []
    for batch in images.split(5):
        with torch.no_grad(), model.net.capture_masks() as own:
            model(batch)
        with torch.no_grad(), model.net.replace_masks(lambda name, _m, own=own: own[name].roll(1, dims=0)):
            expected.append(model(batch).argmax(dim=1))
    assert torch.equal(exchanged, torch.cat(expected) == labels)
    assert not exchanged.all()
    row = result.summary()["interventions"]["exchange:all"]
    assert row["only_real"] == int((~exchanged).sum()) > 0 and row["only_intervened"] == 0
    assert row["p_value"] == mcnemar_p(row["only_real"], 0) < 1
    assert model.training is False  # the mode is restored


def test_importance_refuses_a_shuffled_loader_a_batch_of_one_and_a_network_without_masks() -> None:
    model = tiny()
    images, labels = torch.randn(6, 3, 16, 16), torch.arange(6)
    shuffled = DataLoader(TensorDataset(images, labels), batch_size=3, shuffle=True)
    torch.manual_seed(1)
    with pytest.raises(ValueError, match="other images on its second pass: it must not shuffle"):
        importance(model, shuffled)
    with pytest.raises(ValueError, match="batches of 2 or more images; the loader gave a batch of 1"):
        importance(model, loader_of(images[:5], labels[:5], batch_size=2))
    assert batch_size_without_singles(5, 2) == 3 and batch_size_without_singles(10000, 256) == 256
    resnet = ImageClassifier("resattn_resnet164_cifar", num_classes=10)
    with pytest.raises(ValueError, match="has no attention modules: it has no masks to measure"):
        importance(resnet, loader_of(images, labels))


def forced_masks(name: str, mask: torch.Tensor) -> torch.Tensor:
    """1 on the cells whose footprint lies in the input's [0, 8) x [0, 8), 0 elsewhere: bilinear upsampling spreads
    it by less than one cell, so every positive value stays inside the box (0, 0, 12, 12)."""
    forced = torch.zeros_like(mask)
    cells = 8 * mask.shape[-1] // 16
    forced[..., :cells, :cells] = 1
    return forced


def test_a_mask_on_the_box_scores_one_and_a_flat_mask_scores_chance() -> None:
    model = tiny()
    images = torch.randn(7, 3, 16, 16)
    loader = loader_of(images, torch.zeros(7, dtype=torch.long), batch_size=3)
    boxes = torch.tensor([[0, 0, 12, 12]]).repeat(7, 1)
    with model.net.replace_masks(forced_masks):
        found = localisation(model, loader, boxes)
    assert found.images == 7 and found.box_share == 144 / 256
    assert found.mass_in_box == found.pointing_hits == dict.fromkeys(MODULES, 1.0)
    assert found.flat_channels == dict.fromkeys(MODULES, 0.0)
    assert all(found.low_mass_in_box[name] < 0.5 for name in MODULES)  # the low side is the rest of the canvas
    assert all(found.low_pointing_hits[name] < found.box_share for name in MODULES)  # the minimum is mostly outside
    with model.net.replace_masks(lambda name, mask: 1 - forced_masks(name, mask)):  # low on the box only
        low = localisation(model, loader, boxes)
    assert low.low_mass_in_box == low.low_pointing_hits == dict.fromkeys(MODULES, 1.0)
    assert all(low.pointing_hits[name] < low.box_share for name in MODULES)
    varied = torch.tensor(
        [[0, 0, 12, 12], [2, 3, 5, 9], [0, 0, 16, 16], [8, 8, 16, 16], [1, 1, 2, 2]] + [[4, 4, 8, 8]] * 2
    )
    chance = ((varied[:, 2] - varied[:, 0]) * (varied[:, 3] - varied[:, 1])).double().mean().item() / 256
    with model.net.replace_masks(lambda _name, mask: torch.full_like(mask, 0.5)):
        flat = localisation(model, loader, varied)
    assert flat.box_share == pytest.approx(chance, abs=1e-12)
    for name in MODULES:
        assert flat.mass_in_box[name] == pytest.approx(chance, abs=1e-6)
        assert flat.pointing_hits[name] == pytest.approx(chance, abs=1e-6)
        assert flat.low_mass_in_box[name] == pytest.approx(chance, abs=1e-6)
        assert flat.low_pointing_hits[name] == pytest.approx(chance, abs=1e-6)
        assert flat.flat_channels[name] == 1.0
    real = localisation(model, loader, varied).summary()  # the network's own masks: between 0 and 1
    assert all(0 < row["mass_in_box"] < 1 and 0 <= row["pointing_hits"] <= 1 for row in real["modules"].values())


def test_boxes_that_do_not_fit_are_refused() -> None:
    model = tiny()
    loader = loader_of(torch.randn(4, 3, 16, 16), torch.zeros(4, dtype=torch.long), batch_size=2)
    good = torch.tensor([[0, 0, 8, 8]]).repeat(4, 1)
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\) rows"):
        localisation(model, loader, good[:, :3])
    with pytest.raises(ValueError, match="boxes has 3 rows but the loader gave more images"):
        localisation(model, loader, good[:3])
    with pytest.raises(ValueError, match="boxes has 5 rows but the loader gave 4 images"):
        localisation(model, loader, torch.cat([good, good[:1]]))
    bad = good.clone()
    bad[2] = torch.tensor([4, 0, 17, 8])
    with pytest.raises(ValueError, match=r"box 2 \[4, 0, 17, 8\] is not a box of a 16x16 image: x0 < x1 <= 16"):
        localisation(model, loader, bad)


@pytest.mark.parametrize("residual", [True, False])
def test_amplitude_is_the_spread_of_the_logits(residual: bool) -> None:
    model = tiny(attention_residual=residual)
    images = torch.randn(9, 3, 16, 16)
    found = amplitude(model, loader_of(images, torch.zeros(9, dtype=torch.long), batch_size=4))
    with torch.no_grad(), model.net.capture_masks() as masks, model.net.capture_mask_logits() as logits:
        model(images)  # eval mode: each image's masks do not depend on its batch
    assert list(found) == MODULES
    for name, row in found.items():
        z, m = logits[name].double(), masks[name].double()
        assert row["logit_std"] == pytest.approx(z.std().item(), rel=1e-6)
        assert row["logit_spatial_std"] == pytest.approx(z.flatten(2).std(dim=2).mean().item(), rel=1e-5)
        assert row["std"] == pytest.approx(m.std().item(), rel=1e-6)
        values = m.flatten()
        for key, q in (("p05", 0.05), ("p95", 0.95)):
            exact = values.kthvalue(max(1, round(q * len(values)))).values.item()
            assert row[key] == pytest.approx(exact, abs=3e-5)
        offset = 1.0 if residual else 0.0
        assert row["trunk_scale"] == [offset + row["p05"], offset + row["p95"]]
        assert row["attention"] == ("ARL" if residual else "NAL") and row["mask_type"] == "mixed"
        assert row["channels"] == m.shape[1] and row["logit_std"] > 0


def test_command_writes_the_measures_of_a_trained_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ImageClassifier(ARCH, num_classes=10, optimizer={"name": "sgd", "lr": 0.01})
    data = SyntheticDataModule(image_size=16, num_train_samples=32, batch_size=16, num_workers=0)
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    trainer.save_checkpoint(ckpt)
    assert main(["--ckpt", str(ckpt), *DATA, "--batch-size", "5"]) == 0
    printed = capsys.readouterr().out
    written = json.loads((tmp_path / "run" / "mask_measures.json").read_text())
    assert written["images"] == 11 and written["split"] == "test" and written["network"] == str(ckpt)
    assert set(written["importance"]["interventions"]) == {*(f"mean:{n}" for n in MODULES), "mean:all", "exchange:all"}
    assert list(written["amplitude"]) == MODULES
    assert written["localisation"] is None and "gives no object boxes" in written["localisation_skipped"]
    assert "masks exchanged, all" in printed and "stage 3, module 1" in printed and "mask_measures.json" in printed
    # the measures equal the functions' on the same images (11 images: batches of 6 and 5, none of one)
    test = SyntheticDataModule(image_size=16, num_train_samples=32, num_test_samples=11, num_workers=0)
    test.setup()
    images, labels = (torch.stack([torch.as_tensor(item[i]) for item in test.test_set]) for i in (0, 1))
    direct = importance(load_classifier(ckpt).eval(), loader_of(images, labels, batch_size=6)).summary()
    assert written["importance"] == direct


class BoxedSynthetic(SyntheticDataModule):
    """Synthetic data that gives object boxes, as cluttered data does: the same box for every image."""

    def boxes(self, split: str) -> torch.Tensor:
        dataset = self.test_set if split == "test" else self.val_set
        return torch.tensor([[2, 3, 10, 12]]).repeat(len(dataset), 1)


def test_commands_use_the_boxes_of_data_that_gives_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Localisation and the grid's boxes, for data (here from the run's saved config) with ``boxes(split)``."""
    run = tmp_path / "run"
    ckpt = save_checkpoint(ImageClassifier(ARCH, num_classes=10), run / "checkpoints" / "last.ckpt")
    data = {"_target_": f"{__name__}.BoxedSynthetic", "image_size": 16, "num_train_samples": 16, "num_test_samples": 5}
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text(json.dumps({"paths": {"root_dir": str(tmp_path)}, "data": data}))
    assert main(["--ckpt", str(ckpt), "--measures", "localisation"]) == 0
    found = json.loads((run / "mask_measures.json").read_text())["localisation"]
    assert found["images"] == 5 and found["box_share"] == 72 / 256
    assert list(found["modules"]) == MODULES
    assert "localisation over 5 images (chance: the box's share 0.281)" in capsys.readouterr().out
    assert main(["--ckpt", str(ckpt), "--measures", "localisation", "--markdown"]) == 0
    printed = capsys.readouterr().out
    assert (
        "Chance here: 0.281." in printed
        and "| module | mass in box | pointing hits | low: mass in box | low: pointing hits |" in printed
    )
    drawn: list[torch.Tensor | None] = []
    original = masks_command.mask_figure
    monkeypatch.setattr(masks_command, "mask_figure", lambda *args: drawn.append(args[4]) or original(*args))
    assert masks_command.main(["--ckpt", str(ckpt), "--split", "test", "--num-images", "3"]) == 0
    assert (run / "masks" / "attention_masks.png").is_file()
    assert torch.equal(drawn[0], torch.tensor([[2, 3, 10, 12]]).repeat(3, 1))


def test_command_on_a_pretrained_tag_and_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tag.json"
    synthetic = ["--data", "synthetic", "--set", "in_chans=1", "image_size=28", "num_train_samples=8"]
    args = ["--pretrained", "resattn56_cifar.fmnist", *synthetic, "num_test_samples=4", "--measures", "amplitude"]
    assert main([*args, "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["images"] == 4 and set(written) >= {"amplitude", "command", "seconds"}
    assert "importance" not in written
    assert [row["channels"] for row in written["amplitude"].values()] == [64, 128, 256]
    capsys.readouterr()
    assert main(["--pretrained", "resattn56_cifar.fmnist"]) == 1
    assert "has no run config: name the data it was trained on with --data" in capsys.readouterr().err
    assert main(["--pretrained", "resattn56_cifar.nope", *synthetic]) == 1
    assert "unknown pretrained weights 'resattn56_cifar.nope'; available: resattn56_cifar.fmnist" in (
        capsys.readouterr().err
    )
    assert main(["--ckpt", str(tmp_path / "none.ckpt"), *DATA]) == 1
    assert "none.ckpt does not exist" in capsys.readouterr().err
    resnet = save_checkpoint(ImageClassifier("resattn_resnet164_cifar", num_classes=10), tmp_path / "resnet.ckpt")
    assert main(["--ckpt", str(resnet), *DATA]) == 1
    assert "resattn_resnet164_cifar has no attention modules: it has no masks" in capsys.readouterr().err
    assert main(["--pretrained", "resattn56_cifar.fmnist", *synthetic, "--batch-size", "1"]) == 1
    assert "--batch-size must be >= 2" in capsys.readouterr().err
