"""The base class of every datamodule: its options, the split policy, label noise and DataLoaders.

Split policy (docs/design.md §5): the validation split used for model selection is carved deterministically from the
TRAINING set (``val_fraction``, ``split_seed``); the test split is only served by ``test_dataloader``. docs/paper.md §7
item 17 is the counter-example this avoids (a port that selects its model on the test set).
"""

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from filelock import FileLock, Timeout
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datamodules.cpu_cores import default_workers
from datamodules.datasets import TensorImageDataset, TransformedSubset
from datamodules.errors import DataDownloadError
from datamodules.gpu_resident import BatchAugmentation, DeviceBatchLoader
from datamodules.label_noise import RelabeledDataset, dataset_labels, flip_fraction, noisy_labels
from datamodules.options import DataOptions
from datamodules.resumable import ResumableLoader
from datamodules.splits import global_seed, limited, seeded_order, split_indices

log = logging.getLogger(__name__)


# How the error of a value in ``ImageDataModule.fixed`` names what the data impose ({} is the dataset's name).
FIXED_EVIDENCE = {"num_classes": "classes in {}", "in_chans": "channels of {} images", "image_size": "{} image size"}


class ImageDataModule(L.LightningDataModule):
    """Base class of every resattn datamodule: options, validation, splits, subsets and DataLoaders.

    Subclasses declare their options in a nested ``Options`` dataclass (see :class:`DataOptions`) and the
    options their dataset imposes in ``fixed`` (the ``Options`` default is then the only value allowed; null
    adopts it). They implement ``load_splits`` (returns the training pool, the test set and the class names, as
    undecoded datasets whose items go through ``train_transform()`` / ``eval_transform()``), set ``mean`` and
    ``std`` (as class attributes or in ``__init__``), and may override ``_fit_statistics`` (normalisation computed
    on the training split) and ``device_transform`` (which makes ``gpu_resident=True`` available).
    """

    Options: ClassVar[type[DataOptions]] = DataOptions
    fixed: ClassVar[tuple[str, ...]] = ()
    dataset_name: ClassVar[str] = ""  # for messages; the class name when empty
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def native_image_size(cls, options: Mapping[str, Any]) -> int | None:
        """The side of the images that these data ``options`` give where the datamodule does not resize them (so
        they can be tested at that size only); None where it resizes them to ``image_size``."""
        return cls.Options.image_size if "image_size" in cls.fixed else None

    def __init__(self, **options: Any) -> None:
        """``options``: the fields of ``self.Options`` (what Hydra passes from the YAML); see ``parse_options``."""
        super().__init__()
        config = self.parse_options(options)
        hparams = dataclasses.asdict(config)
        # num_classes may be found in the data (None in the config): it is the attribute, logged by the module.
        del hparams["num_classes"]
        self.save_hyperparameters(hparams)
        if config.gpu_resident and type(self).device_transform is ImageDataModule.device_transform:
            raise ValueError(f"{type(self).__name__} has no GPU-resident data path: set data.gpu_resident=false")
        self.root = os.path.abspath(os.path.expanduser(config.root)) if config.root else config.root
        self.num_classes = config.num_classes
        self.in_chans = config.in_chans
        self.image_size = config.image_size
        self.model_family = config.model_family
        self.batch_size = config.batch_size
        self.eval_batch_size = config.eval_batch_size or config.batch_size
        self.pin_memory = torch.cuda.is_available() if config.pin_memory is None else config.pin_memory
        name = self.dataset_name or type(self).__name__
        defaults = {field.name: field.default for field in dataclasses.fields(self.Options)}
        for key in self.fixed:
            self._check_config(key, defaults[key], FIXED_EVIDENCE[key].format(name))
        self.class_names: list[str] = []
        self.train_set: TransformedSubset | None = None
        self.val_set: TransformedSubset | None = None
        self.test_set: TransformedSubset | None = None
        self.label_noise_realised: float | None = None  # fraction of training labels changed, set in setup

    @classmethod
    def option_names(cls) -> set[str]:
        """The keyword arguments this datamodule accepts: the keys of its ``conf/data`` YAML besides ``_target_``."""
        return {field.name for field in dataclasses.fields(cls.Options)}

    @classmethod
    def parse_options(cls, options: dict[str, Any]) -> DataOptions:
        """``options`` as this class's ``Options``; unknown or missing ones raise a TypeError listing the accepted."""
        required = {f.name for f in dataclasses.fields(cls.Options) if f.default is dataclasses.MISSING}
        wrong = {"unknown": sorted(set(options) - cls.option_names()), "missing": sorted(required - set(options))}
        problems = [f"{kind} option(s) {names}" for kind, names in wrong.items() if names]
        if problems:
            raise TypeError(f"{cls.__name__}: {'; '.join(problems)}; accepted: {sorted(cls.option_names())}")
        return cls.Options(**options)

    # ---- subclass hooks -------------------------------------------------------------------------------------
    def load_splits(self) -> tuple[Dataset, Dataset, list[str]]:
        """Return ``(training pool, test set, class names)``; raise FileNotFoundError with instructions if absent."""
        raise NotImplementedError

    def _fit_statistics(self, pool: Dataset, train_indices: list[int]) -> None:
        """Compute normalisation statistics on the training split (after the validation split is carved out)."""

    def train_transform(self) -> Callable[[Any], torch.Tensor]:
        """Augmentation + normalisation applied to training items."""
        raise NotImplementedError

    def eval_transform(self) -> Callable[[Any], torch.Tensor]:
        """Deterministic preprocessing applied to validation and test items."""
        raise NotImplementedError

    def device_transform(self, *, train: bool) -> BatchAugmentation:
        """The batched on-device equivalent of ``train_transform()`` / ``eval_transform()`` (``gpu_resident``)."""
        raise NotImplementedError(f"{type(self).__name__} has no GPU-resident data path (data.gpu_resident)")

    # ---- shared behaviour -----------------------------------------------------------------------------------
    def _download(
        self, present: Callable[[], bool], fetch: Callable[[], Any], urls: Sequence[str], by_hand: str
    ) -> None:
        """Run ``fetch`` (a torchvision download into ``root``) unless ``present()``; a failure becomes one message
        with the URLs and how to place the files by hand (``by_hand``).

        Processes that share ``root`` (the jobs of a parallel sweep, two terminals) take turns through a lock file
        in ``root``: one downloads, the others wait and then find the files present, instead of writing the same
        archive at once."""
        if present():
            return
        lock = FileLock(Path(self.root) / f".{type(self).__name__}.download.lock")
        try:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                log.info("%s: another process is downloading into %s; waiting for it", type(self).__name__, self.root)
                lock.acquire()
            try:
                if not present():
                    fetch()
            finally:
                lock.release()
        except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision's mirror loop a RuntimeError
            raise DataDownloadError(
                f"{type(self).__name__}: data.download=true could not fetch {', '.join(urls)} into {self.root} "
                f"({type(err).__name__}: {err}). Without network access: {by_hand}"
            ) from None

    def _check_config(self, key: str, found: int, evidence: str) -> None:
        """Adopt ``found`` as ``self.<key>`` when the config left it null; otherwise raise a ValueError naming both
        numbers and the override to use when they differ."""
        configured = getattr(self, key)
        if configured is None:
            setattr(self, key, found)
        elif configured != found:
            raise ValueError(
                f"{type(self).__name__}: {key}={configured} does not match the data ({evidence}: {found}). "
                f"Set data.{key}={found}, or data.{key}=null to take it from the data."
            )

    def setup(self, stage: str | None = None) -> None:
        """Load the data once, carve the validation split from the training set and build the three splits."""
        if self.train_set is not None:
            return
        hp = self.hparams
        pool, test, class_names = self.load_splits()
        self._check_config("num_classes", len(class_names), f"classes in {type(self).__name__} data at {self.root}")
        kept, carved = split_indices(len(pool), hp.val_fraction, hp.split_seed)
        train_indices = limited(kept, hp.max_train_samples)
        val_indices = limited(carved, hp.max_eval_samples)
        test_indices = limited(seeded_order(len(test), hp.split_seed), hp.max_eval_samples)
        self._fit_statistics(pool, train_indices)
        self.class_names = list(class_names)
        train_pool = self._noisy_pool(pool, train_indices) if hp.label_noise > 0 else pool
        self.train_set = TransformedSubset(train_pool, train_indices, self._augmented(), seed=global_seed())
        self.val_set = TransformedSubset(pool, val_indices, self.eval_transform())
        self.test_set = TransformedSubset(test, test_indices, self.eval_transform())

    def _augmented(self) -> Callable[[Any], torch.Tensor]:
        """``train_transform()``, then random erasing (Zhong et al., AAAI 2020) with probability ``random_erasing``:
        a box of 2-33 % of the image with aspect 0.3-3.3 set to 0, i.e. the mean pixel of the normalised image."""
        transform = self.train_transform()
        if self.hparams.random_erasing > 0:
            transform = v2.Compose([transform, v2.RandomErasing(p=self.hparams.random_erasing, value=0)])
        return transform

    def _noisy_pool(self, pool: Dataset, train_indices: list[int]) -> Dataset:
        """The pool with noisy labels for the training split (docs/paper.md §5.2, datamodules/label_noise.py); the
        validation and test splits keep the clean labels. Records and logs the realised flip fraction."""
        hp = self.hparams
        clean = dataset_labels(pool)
        noisy = noisy_labels(clean, self.num_classes, hp.label_noise, hp.label_noise_seed)
        self.label_noise_realised = flip_fraction(clean, noisy, train_indices)
        log.info(
            "label noise %.3f (clean-label ratio r=%.3f, seed %d): %.2f%% of the %d training labels changed",
            hp.label_noise,
            1 - hp.label_noise,
            hp.label_noise_seed,
            100 * self.label_noise_realised,
            len(train_indices),
        )
        if isinstance(pool, TensorImageDataset):
            return TensorImageDataset(pool.images, noisy)
        return RelabeledDataset(pool, noisy)

    def _loader(self, dataset: TransformedSubset | None, *, train: bool) -> DataLoader | DeviceBatchLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() must run before asking for a DataLoader")
        batch_size = self.batch_size if train else self.eval_batch_size
        if train and len(dataset) < batch_size:
            raise ValueError(
                f"the training split has {len(dataset)} samples, fewer than batch_size={batch_size}, so drop_last "
                "would yield no batch: lower data.batch_size or raise data.max_train_samples"
            )
        if self.hparams.gpu_resident:
            return self._device_loader(dataset, batch_size, train=train)
        workers = self.hparams.num_workers
        if workers is None:
            workers = default_workers(self.trainer.num_devices if self.trainer is not None else 1)
        options = dict(
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.hparams.persistent_workers and workers > 0,
        )
        if train and (self.trainer is None or self.trainer.world_size == 1):
            # Exact mid-epoch resumption (DDP runs use Lightning's DistributedSampler instead).
            return ResumableLoader(dataset, seed=global_seed(), **options)
        return DataLoader(dataset, shuffle=train, drop_last=train, **options)

    def _device_loader(self, dataset: TransformedSubset, batch_size: int, *, train: bool) -> DeviceBatchLoader:
        """The split as uint8 tensors on the training device, batched and augmented there (gpu_resident.py).

        The device, rank and world size come from the attached Trainer (CPU, rank 0 of 1 without one); the
        shuffling seed is Lightning's global seed, as for its DistributedSampler.
        """
        if not isinstance(dataset.dataset, TensorImageDataset):
            raise TypeError(f"{type(self).__name__}: the GPU-resident path needs an in-memory uint8 dataset")
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        index = torch.as_tensor(dataset.indices, dtype=torch.long)
        return DeviceBatchLoader(
            dataset.dataset.images[index].to(device),
            dataset.dataset.labels[index],
            self.device_transform(train=train),
            batch_size=batch_size,
            shuffle=train,
            drop_last=train,
            seed=global_seed(),
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=trainer.world_size if trainer is not None else 1,
        )

    def train_dataloader(self) -> DataLoader | DeviceBatchLoader:
        """Shuffled, ``drop_last=True`` batches of ``batch_size``."""
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader | DeviceBatchLoader:
        """Validation split (carved from the training set), in order, batches of ``eval_batch_size``."""
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader | DeviceBatchLoader:
        """Test split, in order, batches of ``eval_batch_size``; never used for model selection."""
        return self._loader(self.test_set, train=False)
