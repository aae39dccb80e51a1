"""The shard format that ``python -m datamodules.shards`` writes and ``data=streaming`` reads, in one place.

A conversion is a folder (local, or its copy in an object store) with one litdata dataset per split,
``<input_dir>/<split>/index.json`` + ``chunk-*.bin``, whose items are
``{"index": i, "source": s, "image": <encoded bytes>, "label": y}`` (``i`` the item's position in the shards, ``s``
its index in the converted dataset). The split's ``index.json`` also holds the converter's entry,
``"resattn": {"class_names": [...], "labels": [...]}`` (all labels, so that label noise and the class count need no
pass over the images). Nothing here needs litdata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SPLITS = ("train", "test")
INDEX_FILE, METADATA_KEY = "index.json", "resattn"  # litdata's index of a split; the converter's entry in it
REMOTE_PREFIXES = ("s3://", "gs://", "azure://", "r2://", "local:")  # litdata's remote schemes (local: for tests)


def is_remote(input_dir: str) -> bool:
    """Whether ``input_dir`` names an object store (litdata downloads its chunks) rather than a local folder."""
    return input_dir.startswith(REMOTE_PREFIXES)


def split_url(input_dir: str, split: str) -> str:
    """The location of one split: a sub-folder of a local folder or of a URL (``s3://bucket/shards/train``)."""
    return f"{input_dir.rstrip('/')}/{split}"


def write_metadata(split_dir: Path, metadata: dict[str, Any]) -> None:
    """Add the converter's entry to the ``index.json`` litdata wrote for a split."""
    path = split_dir / INDEX_FILE
    index = json.loads(path.read_text())
    index[METADATA_KEY] = metadata
    path.write_text(json.dumps(index))


def read_metadata(split_dir: str, where: str) -> dict[str, Any]:
    """The converter's entry of the ``index.json`` in the local folder ``split_dir`` (for a remote split, litdata's
    cached copy), checked against the number of items the index lists; ``where`` names the split in errors."""
    path = os.path.join(split_dir, INDEX_FILE)
    with open(path) as f:
        index = json.load(f)
    if METADATA_KEY not in index:
        raise ValueError(
            f"{where} has no class names and labels in its {INDEX_FILE}: it was not written by "
            "`python -m datamodules.shards`; convert the data with that command"
        )
    metadata = index[METADATA_KEY]
    items = sum(chunk["chunk_size"] for chunk in index["chunks"])
    if items != len(metadata["labels"]):
        raise ValueError(f"{where} holds {items} images but its {INDEX_FILE} lists {len(metadata['labels'])} labels")
    return metadata
