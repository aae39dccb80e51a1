"""``python -m analysis.run_archive``: runs saved into a committed folder and restored under another ``logs/``, where
train.py reports them finished (or resumes an unfinished one) and the analysis reads them like local runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import SMOKE, compose_config
from omegaconf import open_dict

from analysis.predictions import FOLDER as PREDICTIONS_FOLDER
from analysis.predictions import correct_on_test_split
from analysis.run_archive import EVALUATION_KEYS, PLACE_FILE, main
from analysis.run_data import finished_best_checkpoint
from analysis.runs import load_run
from lightning_modules.run_directory import RunDirectory
from lightning_modules.training_task import train
from resattn.checkpoints import read_checkpoint

JOBS = {"finished": "seed:0", "unfinished": "seed:1"}


def job_config(logs: Path, job: str, scratch: Path):
    seed = job.split(":")[1]
    cfg = compose_config("train", [*SMOKE, "logger=csv", "trainer.max_epochs=1", f"seed={seed}"], scratch)
    with open_dict(cfg):
        cfg.paths.output_dir = str(logs / "smoke" / "multiruns" / "sweep" / job)
    return cfg


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real tiny runs of one sweep: one finished, one that stopped before its end (its record says so)."""
    scratch = tmp_path_factory.mktemp("archive")
    logs = scratch / "logs"
    for job in JOBS.values():
        train(job_config(logs, job, scratch))
    RunDirectory(logs / "smoke" / "multiruns" / "sweep" / JOBS["unfinished"]).forget_finished()
    return logs


def test_saved_runs_restore_elsewhere_as_finished_runs(
    logs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = tmp_path / "archive"
    sweep = logs / "smoke" / "multiruns" / "sweep"
    predictions = correct_on_test_split(finished_best_checkpoint(sweep / JOBS["finished"]))
    (kept_predictions,) = (sweep / JOBS["finished"] / PREDICTIONS_FOLDER).iterdir()
    assert main(["--logs", str(logs), "--archive", str(archive), "save", str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert f"saved: {sweep / JOBS['finished']}" in printed
    assert f"skipped: {sweep / JOBS['unfinished']} (not finished; --with-unfinished keeps its last.ckpt)" in printed

    kept = archive / "smoke" / "multiruns" / "sweep" / "seed=0"  # no ':' in a committed path
    assert json.loads((kept / PLACE_FILE).read_text())["logs_path"] == "smoke/multiruns/sweep/seed:0"
    original = finished_best_checkpoint(sweep / JOBS["finished"])
    (saved,) = (kept / "checkpoints").iterdir()
    assert saved.name == original.name
    content = read_checkpoint(saved)
    assert set(content) <= set(EVALUATION_KEYS) and "optimizer_states" in read_checkpoint(original)
    assert saved.stat().st_size < original.stat().st_size
    assert not (archive / "smoke" / "multiruns" / "sweep" / "seed=1").exists()

    elsewhere = tmp_path / "logs"
    for attempt in range(2):  # a second restore leaves the restored run alone
        assert main(["--logs", str(elsewhere), "--archive", str(archive), "restore"]) == 0
        expected = "restored" if attempt == 0 else "skipped"
        assert capsys.readouterr().out.startswith(f"{expected}: {elsewhere / 'smoke/multiruns/sweep/seed:0'}")
    restored = elsewhere / "smoke" / "multiruns" / "sweep" / "seed:0"
    best = finished_best_checkpoint(restored)
    weights, trained = read_checkpoint(best)["state_dict"], read_checkpoint(original)["state_dict"]
    assert weights.keys() == trained.keys() and all(torch.equal(weights[k], trained[k]) for k in weights)
    assert (
        load_run(restored, set()).metrics["test/acc1"] == load_run(sweep / JOBS["finished"], set()).metrics["test/acc1"]
    )
    restored_predictions = restored / PREDICTIONS_FOLDER / kept_predictions.name  # the claims read them, not evaluate
    assert torch.equal(torch.load(restored_predictions, weights_only=True)["correct"], predictions)

    cfg = job_config(elsewhere, JOBS["finished"], tmp_path)  # the same command on the other machine
    versions = sorted(p.name for p in (restored / "csv").iterdir())
    metrics = train(cfg)
    assert metrics["test/acc1"] == pytest.approx(load_run(restored, set()).metrics["test/acc1"])
    assert sorted(p.name for p in (restored / "csv").iterdir()) == versions  # reported, not trained again


def test_an_unfinished_run_travels_whole_and_resumes(
    logs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive, elsewhere = tmp_path / "archive", tmp_path / "logs"
    run = logs / "smoke" / "multiruns" / "sweep" / JOBS["unfinished"]
    assert main(["--logs", str(logs), "--archive", str(archive), "save", "--with-unfinished", str(run)]) == 0
    kept = archive / "smoke" / "multiruns" / "sweep" / "seed=1" / "checkpoints" / "last.ckpt"
    assert kept.read_bytes() == (run / "checkpoints" / "last.ckpt").read_bytes()
    assert main(["--logs", str(elsewhere), "--archive", str(archive), "restore"]) == 0
    restored = elsewhere / "smoke" / "multiruns" / "sweep" / JOBS["unfinished"]
    assert RunDirectory(restored).read_record().get("finished") is None
    train(job_config(elsewhere, JOBS["unfinished"], tmp_path))
    assert f"Restored all states from the checkpoint at {restored / 'checkpoints' / 'last.ckpt'}" in caplog.text
    assert RunDirectory(restored).read_record()["finished"]["tested"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["save", "{outside}"], "is not under the logs directory"),
        (["save", "{logs}/missing"], "is not a folder"),
        (["save", "{logs}"], "holds no run of train.py"),
        (["restore"], "no archive at"),
    ],
)
def test_bad_arguments_say_what_is_accepted(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs, outside = tmp_path / "logs", tmp_path / "elsewhere"
    logs.mkdir()
    outside.mkdir()
    argv = [a.format(logs=logs, outside=outside) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        main(["--logs", str(logs), "--archive", str(tmp_path / "archive"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
