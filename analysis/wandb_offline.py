"""Read what an offline W&B run wrote (``<run dir>/wandb/offline-run-*/run-*.wandb``), without a server.

Recent wandb versions keep an offline run's config, history and summary only in this transaction log
(a LevelDB-style log of protobuf ``Record`` messages, the same file ``wandb sync`` uploads), so tests and
the results script read it here.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
_BLOCK = 32 * 1024
_RECORD_HEADER = 7  # crc32 (4), length (2), type (1)
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """Config, per-step history and final summary of one offline W&B run, and where it belongs (its id, group, job
    type, name and tags); once it has ended, its exit code (0: finished, else failed or, when ``preempting`` was
    marked, stopped to be resumed)."""

    path: Path
    run_id: str = ""
    group: str = ""
    job_type: str = ""
    name: str = ""
    tags: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    exit_code: int | None = None
    preempting: bool = False

    @property
    def flat_config(self) -> dict[str, Any]:
        """The config with nested values under dotted keys (``{"optimizer": {"lr": 0.1}}`` -> ``optimizer.lr``), as
        W&B's filters and the results tables name them; keys logged flat stay as they are."""
        flat: dict[str, Any] = {}
        pending = list(self.config.items())
        while pending:
            key, value = pending.pop()
            if isinstance(value, dict) and value:
                pending += [(f"{key}.{k}", v) for k, v in value.items()]
            else:
                flat[key] = value
        return flat

    def history_keys(self) -> set[str]:
        """Every key that the history (``wandb.log``) holds at some step."""
        return {key for row in self.history for key in row}

    def media_keys(self) -> set[str]:
        """The keys of the media (images) in the history: W&B logs one as nested keys ``<key>/_type``, ...)."""
        return {key.removesuffix("/_type") for key in self.history_keys() if key.endswith("/_type")}


class DamagedLogError(ValueError):
    """A transaction log that cannot be decoded: bad header, a record whose checksum does not match, or a payload
    that is not a W&B record (a file still being written, or damaged)."""


def _payloads(data: bytes) -> list[bytes]:
    """The records' payloads, each checked against its CRC-32 (of the type byte and the data, as W&B writes it)."""
    if not data.startswith(_HEADER):
        raise DamagedLogError("not a W&B transaction log (bad header)")
    pos, chunks, payloads = len(_HEADER), [], []
    while pos + _RECORD_HEADER <= len(data):
        space = _BLOCK - pos % _BLOCK
        if space < _RECORD_HEADER:  # block trailer padding
            pos += space
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + _RECORD_HEADER])
        if length == 0 and kind == 0:
            break
        chunk = data[pos + _RECORD_HEADER : pos + _RECORD_HEADER + length]
        if len(chunk) != length or zlib.crc32(bytes([kind]) + chunk) != checksum:
            raise DamagedLogError(f"record at byte {pos} is truncated or fails its checksum")
        pos += _RECORD_HEADER + length
        if kind == _FULL:
            payloads.append(chunk)
        elif kind == _FIRST:
            chunks = [chunk]
        elif kind == _MIDDLE:
            chunks.append(chunk)
        elif kind == _LAST:
            payloads.append(b"".join([*chunks, chunk]))
    return payloads


def _items(items: Any) -> dict[str, Any]:
    out = {}
    for item in items:
        key = item.key or "/".join(item.nested_key)
        out[key] = json.loads(item.value_json)
    return out


def read_offline_run(run_dir: str | Path) -> OfflineRun:
    """Parse ``run_dir`` (an ``offline-run-*`` directory, or its ``.wandb`` file).

    ``finished`` is True once the log holds the run's exit record: a log without one belongs to a run that is still
    running, was killed, or has not been flushed yet by the W&B service. Raises :class:`DamagedLogError` for a log
    that cannot be decoded.
    """
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    path = Path(run_dir)
    log_file = path if path.suffix == ".wandb" else next(path.glob("run-*.wandb"), None)
    if log_file is None:
        raise FileNotFoundError(f"no run-*.wandb file in {path}")
    run = OfflineRun(path=log_file.parent)
    for payload in _payloads(log_file.read_bytes()):
        record = wandb_internal_pb2.Record()
        try:
            record.ParseFromString(payload)
        except DecodeError as err:  # protobuf's error is not a ValueError
            raise DamagedLogError(f"{log_file}: a record is not a W&B record ({err})") from None
        kind = record.WhichOneof("record_type")
        if kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "run":
            run.config.update(_items(record.run.config.update))
            run.run_id, run.group, run.job_type = record.run.run_id, record.run.run_group, record.run.job_type
            run.name, run.tags = record.run.display_name, tuple(record.run.tags)
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "exit":
            run.finished = True
            run.exit_code = record.exit.exit_code
        elif kind == "preempting":
            run.preempting = True
    return run
