"""Bad input to train.py / eval.py: one clear message, nothing lost, and the everyday fixes (inferred classes)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from files import truncate, write_image, write_tree
from helpers import SMOKE, SMOKE_DATA, compose_config, run_script
from torchvision.datasets import CIFAR10, FashionMNIST

from datamodules.errors import DataDownloadError
from lightning_modules import ImageClassifier
from lightning_modules.evaluation_task import evaluate
from lightning_modules.training_task import train
from resattn.checkpoints import CheckpointError

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: the connection is refused at once, as without network


def save_classifier(path: Path, arch: str, num_classes: int, in_chans: int = 3) -> Path:
    model = ImageClassifier(arch, num_classes=num_classes, in_chans=in_chans)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def test_train_refuses_a_checkpoint_of_another_network_in_one_message(tmp_path: Path) -> None:
    other = save_classifier(tmp_path / "other.ckpt", "resattn_tiny", num_classes=4)
    cfg = compose_config("train", [*SMOKE, "logger=csv", f"ckpt_path={other}"], tmp_path)
    with pytest.raises(CheckpointError) as err:
        train(cfg)
    message = str(err.value)
    assert "holds 'resattn_tiny' for 4 classes, 3 input channel(s)" in message
    assert "this run builds 'resattn_tiny_cifar' for 10 classes, 3 input channel(s)" in message
    assert len(message) < 600 and "size mismatch" not in message


def test_a_damaged_last_checkpoint_says_how_to_continue(tmp_path: Path) -> None:
    command = [*SMOKE, "logger=csv"]
    train(compose_config("train", [*command, "trainer.max_epochs=1"], tmp_path))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    truncate(last)
    with pytest.raises(CheckpointError) as err:
        train(compose_config("train", [*command, "trainer.max_epochs=2"], tmp_path))
    message = str(err.value)
    (best,) = (tmp_path / "run" / "checkpoints").glob("best-*.ckpt")
    assert f"cannot read checkpoint {last}: it is truncated" in message
    assert f"resume from one of its other checkpoints ({best})" in message and "auto_resume=false" in message
    assert "weights_only=False" not in message
    # Both ways out work: the earlier checkpoint, or starting over.
    metrics = train(compose_config("train", [*command, "trainer.max_epochs=2", f"ckpt_path={best}"], tmp_path))
    assert "test/acc1" in metrics
    truncate(last)
    metrics = train(compose_config("train", [*command, "trainer.max_epochs=1", "auto_resume=false"], tmp_path))
    assert torch.load(last, weights_only=True)["global_step"] == 5


def test_a_code_executing_checkpoint_is_refused_without_torchs_advice(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Exploit()}, evil)
    with pytest.raises(CheckpointError) as err:
        train(compose_config("train", [*SMOKE, "logger=csv", f"ckpt_path={evil}"], tmp_path))
    message = str(err.value)
    assert "refusing to load" in message and "it would import and call getattr when unpickled" in message
    assert "weights_only=False" not in message and "Weights only load failed" not in message
    assert not (tmp_path / "pwned").exists()


def test_eval_names_the_input_channels_of_the_checkpoint_and_the_data(tmp_path: Path) -> None:
    gray = save_classifier(tmp_path / "gray.ckpt", "resattn_tiny_cifar", num_classes=10, in_chans=1)
    cfg = compose_config("eval", [f"ckpt_path={gray}", *SMOKE_DATA], tmp_path)
    with pytest.raises(CheckpointError, match=r"trained on 1-channel images \(in_chans=1\) but the data has 3"):
        evaluate(cfg)


@pytest.mark.parametrize("data", ["cifar10", "fashion_mnist"])
def test_a_failed_download_says_what_failed_and_how_to_place_the_files(
    data: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CIFAR10, "url", f"{UNREACHABLE}cifar-10-python.tar.gz")
    monkeypatch.setattr(FashionMNIST, "mirrors", [UNREACHABLE])
    overrides = (
        [f"data={data}", "data.download=true", "data.system_dir=/nonexistent"]
        if data == "fashion_mnist"
        else [
            f"data={data}",
            "data.download=true",
        ]
    )
    cfg = compose_config("train", ["model=tiny", *overrides], tmp_path)
    with pytest.raises(DataDownloadError) as err:
        train(cfg)
    message = str(err.value)
    assert UNREACHABLE in message and "Without network access" in message and str(tmp_path / "data") in message
    assert not (tmp_path / "run" / "csv").exists() and not (tmp_path / "run" / "wandb").exists()
    assert "Without network access" in (tmp_path / "run" / "train.log").read_text()  # the log holds the error


def test_eval_checks_its_inputs_before_it_loads_the_data(tmp_path: Path) -> None:
    """Data that are not there (CIFAR-10 in an empty folder) would fail too, but later: each of these inputs is
    reported first, not after minutes of loading and testing."""
    checkpoint = save_classifier(tmp_path / "model.ckpt", "resattn_tiny_cifar", num_classes=10)
    empty = tmp_path / "empty"
    empty.mkdir()
    no_data = ["data=cifar10", f"data.root={tmp_path / 'no_cifar'}"]
    cases = {
        "": "eval.py needs exactly one of ckpt_path=",
        f"ckpt_path={tmp_path / 'nope.ckpt'}": "nope.ckpt does not exist; give a checkpoint written by train.py",
        "pretrained=resattn56_cifar.nope": "unknown pretrained weights 'resattn56_cifar.nope'; available:",
        f"predict_dir={tmp_path / 'nowhere'}": "nowhere is not a directory of images",
        f"predict_dir={empty}": "no images (.png",
        "test_sizes=[32,48]": "test_sizes=[32, 48]: CIFAR-10 images are 32x32 and are not resized, so they are tested "
        "at 32 only; drop test_sizes",
    }
    for override, message in cases.items():
        source = [] if override.startswith(("ckpt_path", "pretrained")) or not override else [f"ckpt_path={checkpoint}"]
        overrides = [*source, *([override] if override else []), *no_data]
        with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
            evaluate(compose_config("eval", overrides, tmp_path / "eval"))
    # canvases are not resized either; their side is an option of the data
    for canvas, data in ((60, []), (40, ["data.canvas_size=40"])):
        overrides = [f"ckpt_path={checkpoint}", "data=cluttered_fmnist", *data, "test_sizes=[20]"]
        message = f"cluttered Fashion-MNIST images are {canvas}x{canvas} and are not resized"
        with pytest.raises(ValueError, match=re.escape(message)):
            evaluate(compose_config("eval", overrides, tmp_path / "eval"))


def test_one_unreadable_image_does_not_throw_away_an_evaluation(tmp_path: Path) -> None:
    checkpoint = save_classifier(tmp_path / "model.ckpt", "resattn_tiny_cifar", num_classes=10)
    images = tmp_path / "mine"
    write_image(images / "good.png", seed=1)
    truncate(write_image(images / "broken.jpg", seed=2))
    cfg = compose_config("eval", [f"ckpt_path={checkpoint}", *SMOKE_DATA, f"predict_dir={images}"], tmp_path)
    results = evaluate(cfg)
    out = tmp_path / "run"
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["sizes"]["16"]["test/acc1"] == results["sizes"]["16"]["test/acc1"]
    assert len(saved["unreadable_images"]) == 1 and saved["unreadable_images"][0].startswith("broken.jpg: ")
    with (out / "predictions.csv").open() as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    assert rows["good.png"]["top1"].startswith("class_") and rows["good.png"]["error"] == ""
    assert rows["broken.jpg"]["top1"] == "" and rows["broken.jpg"]["error"].startswith("unreadable image")


def test_an_image_folder_gives_its_classes(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_tree(root / "train", ["cat", "dog", "fox"], per_class=12)
    write_tree(root / "val", ["cat", "dog", "fox"], per_class=4, seed=1)
    folder = ["model=tiny", "data=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=8"]
    cfg = compose_config("train", [*folder, "trainer.max_epochs=1", "logger=csv", "data.num_workers=0"], tmp_path)
    metrics = train(cfg)
    assert cfg.data.num_classes == 3 and metrics["test/acc5"] == 1.0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["hyper_parameters"]["num_classes"] == 3
    wrong = compose_config("train", [*folder, "data.num_classes=5", "logger=csv"], tmp_path / "wrong")
    with pytest.raises(ValueError, match=r"num_classes=5 does not match the data \(class directories in .*: 3\)"):
        train(wrong)


def test_the_trainer_limits_are_plain_overrides(tmp_path: Path) -> None:
    cfg = compose_config("train", [*SMOKE, "logger=csv", "trainer.limit_train_batches=2"], tmp_path)
    train(cfg)
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4


@pytest.mark.parametrize("override", ["trainer.max_epochs=abc", "trainer.max_steps=1.5", "trainer.max_epochs=-2"])
def test_a_run_length_that_is_not_a_whole_number_is_refused(override: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [*SMOKE, "logger=csv", override], tmp_path)
    key, value = override.split("=")
    with pytest.raises(ValueError, match=rf"^{key}='?{value}'? is not a run length: give a whole number"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_run_cannot_be_made_shorter_than_it_has_trained(tmp_path: Path) -> None:
    train(compose_config("train", [*SMOKE, "logger=csv"], tmp_path))  # 2 epochs of 5 steps
    for override, trained in [("trainer.max_epochs=1", "2 epochs"), ("trainer.max_steps=4", "10 steps")]:
        cfg = compose_config("train", [*SMOKE, "logger=csv", override], tmp_path)
        key, limit = override.split("=")
        with pytest.raises(ValueError, match=rf"last.ckpt has trained {trained}, more than {key}={limit}: a run"):
            train(cfg)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["finished"]["length"]["max_epochs"] == 2
    cfg = compose_config("train", [*SMOKE, "logger=csv", "trainer.max_epochs=3"], tmp_path)
    assert "test/acc1" in train(cfg)  # longer is fine


def test_a_bad_input_ends_the_command_with_its_message_alone(tmp_path: Path) -> None:
    """One line says what is wrong (exit status 1, no traceback); the traceback is in the run's log, the run directory
    is released (the next run takes nothing over), and HYDRA_FULL_ERROR=1 shows the traceback."""
    command = [*SMOKE, "logger=csv", f"ckpt_path={tmp_path / 'nope.ckpt'}"]
    failed = run_script("train.py", *command, cwd=tmp_path, check=False)
    out = failed.stdout + failed.stderr
    assert failed.returncode == 1 and "Traceback" not in out
    assert f"error: ckpt_path={tmp_path / 'nope.ckpt'} does not exist; give an existing .ckpt or null" in failed.stderr
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    log = (run / "train.log").read_text()
    assert "the run failed" in log and "Traceback" in log and "FileNotFoundError" in log
    assert f"the traceback is in {run / 'train.log'}" in failed.stderr
    assert (run / ".lock").read_text() == ""
    again = run_script("train.py", *command, cwd=tmp_path, check=False, env={"HYDRA_FULL_ERROR": "1"})
    assert again.returncode == 1 and "Traceback" in again.stderr and "Taking over" not in again.stderr


def test_only_bad_inputs_lose_their_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra.errors import InstantiationException

    from lightning_modules.console import bad_input_reported

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    expected = r"^error: image_size=20 does not match\n\(HYDRA_FULL_ERROR=1 prints"
    with pytest.raises(SystemExit, match=expected), bad_input_reported():
        try:
            raise ValueError("image_size=20 does not match")
        except ValueError as err:  # what hydra.utils.instantiate raises for an error of the class it builds
            raise InstantiationException("Error in call to target 'datamodules.X'") from err
    logged = FileNotFoundError("no such file: data.bin")
    logged.traceback_log = Path("run/train.log")  # what RunDirectory.logged marks on an error it wrote down
    expected = r"^error: no such file: data.bin\n\(the traceback is in run/train.log; "
    with pytest.raises(SystemExit, match=expected), bad_input_reported():
        raise logged
    with pytest.raises(RuntimeError, match="a bug"), bad_input_reported():
        raise RuntimeError("a bug")  # not a bad input: the traceback stays
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ValueError), bad_input_reported():
        raise ValueError("shown with its traceback")


@pytest.mark.slow
def test_an_unreadable_image_met_in_training_or_evaluation_ends_with_one_message(tmp_path: Path) -> None:
    """An image that cannot be decoded, met by a DataLoader worker in training and in eval.py: one message naming
    the file and the remedy, exit status 1, no traceback (it is in the run's log, the worker's included); the remedy
    it names works."""
    root = tmp_path / "images"
    write_tree(root / "train", ["cat", "dog"], per_class=12)
    write_tree(root / "test", ["cat", "dog"], per_class=2, seed=1)
    damaged = truncate(root / "train" / "dog" / "img5.png")
    data = ["data=folder", f"data.root={root}", "data.image_size=32", "data.batch_size=8", "data.num_workers=2"]
    command = ["model=tiny", "trainer.max_epochs=1", "logger=csv", *data]
    failed = run_script("train.py", *command, cwd=tmp_path, check=False)
    said = failed.stdout + failed.stderr
    assert failed.returncode == 1 and "Traceback" not in said and said.count("cannot decode image file") == 1
    assert f"error: cannot decode image file {damaged} (OSError: " in failed.stderr and "skip_corrupt=true" in said
    assert "The run failed at step 1 (recorded as failed in run.json); no last.ckpt was written" in said  # mid-epoch
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    log = (run / "train.log").read_text()
    assert "Traceback" in log and "Caught DamagedDataError in DataLoader worker process" in log

    run_script("train.py", *command, "data.skip_corrupt=true", cwd=tmp_path)
    (checkpoint,) = tmp_path.glob("logs/train/runs/*skip_corrupt*/checkpoints/last.ckpt")
    damaged = truncate(root / "test" / "cat" / "img1.png")
    evaluated = run_script("eval.py", f"ckpt_path={checkpoint}", *data, cwd=tmp_path, check=False)
    said = evaluated.stdout + evaluated.stderr
    assert evaluated.returncode == 1 and "Traceback" not in said and said.count("cannot decode image file") == 1
    assert f"error: cannot decode image file {damaged} (OSError: " in evaluated.stderr
