"""Reading offline W&B logs: finished vs unfinished, checksums, damaged records, and the fall-back to older logs."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest

from analysis.runs import _newest_wandb_run
from analysis.wandb_offline import DamagedLogError, read_offline_run


@pytest.fixture(scope="module")
def finished_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real, complete offline run (written by wandb itself, the service torn down so that it is flushed)."""
    import wandb

    root = tmp_path_factory.mktemp("wandb")
    config = {"lr": 0.1, "optimizer": {"name": "sgd", "schedule": {"gamma": 0.1}}}
    wandb.init(mode="offline", dir=root, project="test", config=config, group="sweep", job_type="train", tags=["a=1"])
    wandb.log({"test/acc1": 0.75})
    wandb.finish()
    wandb.teardown()
    (folder,) = (root / "wandb").glob("offline-run-*")
    return folder


def copy_run(folder: Path, run: Path, name: str) -> Path:
    target = run / "wandb" / name
    shutil.copytree(folder, target)
    return next(target.glob("run-*.wandb"))


def test_a_complete_log_is_finished(finished_log: Path) -> None:
    run = read_offline_run(finished_log)
    assert run.finished and run.config["lr"] == 0.1 and run.summary["test/acc1"] == 0.75


def test_the_run_s_place_and_its_nested_config_are_read(finished_log: Path) -> None:
    """What a dashboard slices by: the group, job type, tags and id, and the nested config under dotted keys."""
    run = read_offline_run(finished_log)
    assert (run.group, run.job_type, run.tags) == ("sweep", "train", ("a=1",))
    assert run.run_id and finished_log.name.endswith(run.run_id)
    assert run.config["optimizer"]["name"] == "sgd"
    assert {"lr": 0.1, "optimizer.name": "sgd", "optimizer.schedule.gamma": 0.1}.items() <= run.flat_config.items()
    assert run.history_keys() >= {"test/acc1"} and run.media_keys() == set()


def test_a_log_not_yet_flushed_is_unfinished(finished_log: Path, tmp_path: Path) -> None:
    log = copy_run(finished_log, tmp_path, "offline-run-20990101_000000-abc")
    log.write_bytes(log.read_bytes()[:7])  # what the service has written at first: the header only
    run = read_offline_run(log.parent)
    assert not run.finished and run.summary == {}


def test_checksums_and_undecodable_records_are_refused(finished_log: Path, tmp_path: Path) -> None:
    log = copy_run(finished_log, tmp_path, "offline-run-1")
    data = bytearray(log.read_bytes())
    data[20] ^= 0xFF  # inside the first record's payload
    log.write_bytes(bytes(data))
    with pytest.raises(DamagedLogError, match="checksum"):
        read_offline_run(log)
    # A record whose checksum matches but whose payload is no protobuf message (protobuf's DecodeError).
    payload = b"\xff\xff\xff\xff"
    header = struct.pack("<IHB", zlib.crc32(bytes([1]) + payload), len(payload), 1)
    log.write_bytes(data[:7] + header + payload)
    with pytest.raises(DamagedLogError, match="not a W&B record"):
        read_offline_run(log)
    log.write_bytes(b"not a log")
    with pytest.raises(DamagedLogError, match="bad header"):
        read_offline_run(log)


def test_results_fall_back_to_the_newest_finished_log(finished_log: Path, tmp_path: Path) -> None:
    """A run restarted twice: the newest log is damaged, the one before unfinished (killed): the oldest, finished,
    one is used; with only unfinished or damaged logs, the newest readable one."""
    copy_run(finished_log, tmp_path, "offline-run-20260101_000000-a")
    unfinished = copy_run(finished_log, tmp_path, "offline-run-20260102_000000-a")
    unfinished.write_bytes(unfinished.read_bytes()[:7])
    damaged = copy_run(finished_log, tmp_path, "offline-run-20260103_000000-a")
    damaged.write_bytes(b"garbage")
    found = _newest_wandb_run(tmp_path)
    assert found is not None and found.finished and found.path.name == "offline-run-20260101_000000-a"
    shutil.rmtree(tmp_path / "wandb" / "offline-run-20260101_000000-a")
    found = _newest_wandb_run(tmp_path)
    assert found is not None and not found.finished and found.path.name == "offline-run-20260102_000000-a"
