"""litdata shards (``data=streaming``): any data this project reads, converted once by ``python -m
datamodules.shards``, streamed from a local folder or an object store (``s3://``; litdata also reads ``gs://`` and
``azure://`` where their client libraries are installed).

Training goes through litdata's ``StreamingDataset`` / ``StreamingDataLoader``: chunks are shuffled and read in
order (a remote chunk is downloaded once into ``root``, at most ``max_cache_size`` of them kept), each DDP rank
and each worker reads its own chunks, and the loader's ``state_dict`` (saved by Lightning in every checkpoint)
resumes an epoch exactly where it stopped. The splits follow the shared policy: the shards' ``train`` split is the
pool from which the validation split is carved (``val_fraction``, ``split_seed``) and ``max_train_samples`` taken,
as a litdata subset; ``test`` is the test set. Remote credentials come from the environment as for the store's
own tools (for S3: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or a profile, ``AWS_ENDPOINT_URL`` for other
S3-compatible stores).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.cpu_cores import default_workers
from datamodules.encoded import EncodedImageDataModule
from datamodules.label_noise import dataset_labels
from datamodules.optional import require
from datamodules.shard_format import INDEX_FILE, SPLITS, is_remote, read_metadata, split_url
from datamodules.splits import global_seed

# litdata asks PyPI for a newer version of itself whenever a dataset is opened (30 s timeout): not from training jobs
os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")


class StreamingDataModule(EncodedImageDataModule):
    """Shards written by ``python -m datamodules.shards``, ImageNet-style transforms (see the module doc)."""

    @dataclasses.dataclass(kw_only=True)
    class Options(EncodedImageDataModule.Options):
        input_dir: str  # the converter's output folder, or its copy in an object store (s3://bucket/path)
        max_cache_size: str = "50GB"  # disk kept under root for the chunks of a remote input_dir

    def __init__(self, **options: Any) -> None:
        require("litdata", "data=streaming")
        super().__init__(**options)
        input_dir = self.hparams.input_dir
        self.input_dir = input_dir if is_remote(input_dir) else os.path.abspath(input_dir)

    def _open(self, split: str, *, training: bool = False) -> Any:
        """A split of the shards: for training a shuffled, ``drop_last`` :class:`TrainingShards`."""
        from datamodules.shard_reading import TrainingShards, open_split

        options: dict[str, Any] = {"max_cache_size": self.hparams.max_cache_size}
        if training:
            options |= {"cls": TrainingShards, "shuffle": True, "drop_last": True, "seed": global_seed()}
        return open_split(self.input_dir, split, self.root, **options)

    def load_splits(self) -> tuple[Dataset, Dataset, list[str]]:
        from datamodules.shard_reading import ShardImages, check_split

        index = f"{split_url(self.input_dir, 'train')}/{INDEX_FILE}"
        local = not is_remote(self.input_dir)
        if local and not os.path.isfile(index):
            raise FileNotFoundError(
                f"no shards at {self.input_dir} ({index} does not exist). Write them with `python -m "
                "datamodules.shards OUT data=<choice> ...` (README: Data at scale) and set data.input_dir=OUT, or "
                "an s3:// copy of OUT"
            )
        splits = []
        for split in SPLITS:
            if local:  # a remote split's chunks are checked as they are downloaded
                check_split(split_url(self.input_dir, split))
            dataset = self._open(split)
            metadata = read_metadata(dataset.input_dir.path, split_url(self.input_dir, split))
            splits.append((ShardImages(dataset, torch.as_tensor(metadata["labels"])), list(metadata["class_names"])))
        (pool, class_names), (test, test_class_names) = splits
        if test_class_names != class_names:
            raise ValueError(f"the train and test shards under {self.input_dir} name different classes")
        return pool, test, class_names

    def train_dataloader(self) -> DataLoader:
        """litdata's ``StreamingDataLoader`` over the training subset of the shards, shuffled by chunk and
        within chunks (seeded by Lightning's global seed), ``drop_last``; stateful, so Lightning checkpoints
        its position. Each DDP rank (torch.distributed is up when the Trainer asks) reads its own chunks. Its
        workers start anew each epoch (``persistent_workers`` applies to the evaluation loaders)."""
        from litdata import StreamingDataLoader

        self._choose_decoding()
        train = self.train_set
        if train is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a DataLoader")
        if len(train) < self.batch_size:
            raise ValueError(
                f"the training split has {len(train)} samples, fewer than batch_size={self.batch_size}, so drop_last "
                "would yield no batch: lower data.batch_size or raise data.max_train_samples"
            )
        shards = self._open("train", training=True).subset(train.indices)
        shards.transform_image = train.transform
        shards.labels = dataset_labels(train.dataset)
        shards.augmentation_seed = train.seed
        workers = self.hparams.num_workers
        if workers is None:
            workers = default_workers(self.trainer.num_devices if self.trainer is not None else 1)
        return StreamingDataLoader(
            shards,
            batch_size=self.batch_size,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=False,  # litdata's persistent workers take seconds each to shut down
        )
