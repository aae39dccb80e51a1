"""CIFAR-10/100 (docs/paper.md §5.1): 32x32 RGB, pad-4 random crop + flip, per-pixel mean subtraction, no std division.

The files are read by torchvision's own ``CIFAR10``/``CIFAR100`` code from the standard python-pickle layout
(``<root>/cifar-10-batches-py/`` or ``<root>/cifar-100-python/``). Integrity is checked here rather than inside
torchvision so that a failure names the file: every expected file must exist, and with ``verify_checksums=True``
(the default) each must match torchvision's md5. ``verify_checksums=False`` accepts any files in the right
format (small test fixtures, re-packed or subsampled copies); a format error then names the folder.
"""

import dataclasses
import pickle
from pathlib import Path
from typing import ClassVar

import torch
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity
from torchvision.transforms import v2

from datamodules.base import ImageDataModule
from datamodules.datasets import TensorImageDataset
from datamodules.gpu_resident import BatchAugmentation
from datamodules.options import DataOptions
from datamodules.transforms import cifar_transform, pixel_moments
from input_conventions import CIFAR10_MEAN, CIFAR100_MEAN, CIFAR_STD

CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"


class _CIFAR10Files(CIFAR10):
    """torchvision's CIFAR-10 reader checking presence only (md5 ``None``); the datamodule checks md5s itself."""

    train_list: ClassVar[list] = [[name, None] for name, _ in CIFAR10.train_list]
    test_list: ClassVar[list] = [[name, None] for name, _ in CIFAR10.test_list]
    meta: ClassVar[dict] = {**CIFAR10.meta, "md5": None}


class _CIFAR100Files(CIFAR100):
    """torchvision's CIFAR-100 reader checking presence only (md5 ``None``); the datamodule checks md5s itself."""

    train_list: ClassVar[list] = [[name, None] for name, _ in CIFAR100.train_list]
    test_list: ClassVar[list] = [[name, None] for name, _ in CIFAR100.test_list]
    meta: ClassVar[dict] = {**CIFAR100.meta, "md5": None}


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 with the paper's augmentation and per-pixel mean subtraction (docs/paper.md §5.1).

    ``mean_image`` (3x32x32, in [0, 1] units) is computed in ``setup`` on the training split, after the
    validation split has been carved out; ``mean`` is then its per-channel average and ``std`` is all ones.
    """

    @dataclasses.dataclass(kw_only=True)
    class Options(DataOptions):
        num_classes: int | None = 10
        in_chans: int = 3
        image_size: int = 32
        model_family: str = "cifar"
        download: bool = False  # fetch the official archive into root
        verify_checksums: bool = True  # md5 of every file against torchvision's table

    fixed = ("num_classes", "in_chans", "image_size")
    dataset_name = "CIFAR-10"
    torchvision_cls: type[CIFAR10] = CIFAR10
    files_cls: type[CIFAR10] = _CIFAR10Files
    mean = CIFAR10_MEAN  # of the full training set; replaced by the training split's in setup
    std = CIFAR_STD  # no std division (docs/paper.md §5.1)
    mean_image: torch.Tensor | None = None  # computed in setup

    @property
    def folder(self) -> Path:
        """The extracted python-version folder torchvision reads."""
        return Path(self.root) / self.torchvision_cls.base_folder

    def _expected_files(self) -> list[tuple[str, str]]:
        cls = self.torchvision_cls
        return [(name, md5) for name, md5 in cls.train_list + cls.test_list] + [(cls.meta["filename"], cls.meta["md5"])]

    def prepare_data(self) -> None:
        """Download and extract the official archive when ``download=True`` and files are missing."""
        if self.hparams.download:
            url = self.torchvision_cls.url
            self._download(
                lambda: all((self.folder / name).is_file() for name, _ in self._expected_files()),
                lambda: self.torchvision_cls(self.root, train=True, download=True),
                [url],
                f"download {url} on a machine that has it and extract it into {self.root}, so that {self.folder}/ "
                "exists; then run without data.download=true.",
            )

    def load_splits(self) -> tuple[Dataset, Dataset, list[str]]:
        files = self._expected_files()
        missing = [name for name, _ in files if not (self.folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{self.dataset_name} not found: looked in {self.folder} and it lacks {', '.join(missing)}. "
                f"Expected {self.folder}/ with {', '.join(name for name, _ in files)} (the 'python version' "
                f"from {CIFAR_PAGE}). Fix: set data.download=true to fetch it into {self.root}, or extract "
                f"{self.torchvision_cls.filename} into {self.root}."
            )
        if self.hparams.verify_checksums:
            bad = [name for name, md5 in files if not check_integrity(str(self.folder / name), md5)]
            if bad:
                raise RuntimeError(
                    f"{self.dataset_name}: md5 mismatch for {', '.join(str(self.folder / n) for n in bad)}. "
                    f"Delete {self.folder} and set data.download=true to fetch the official files, or set "
                    "data.verify_checksums=false if this is a deliberately modified copy."
                )
        try:
            train, test = (self.files_cls(self.root, train=split) for split in (True, False))
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
            raise ValueError(
                f"{self.folder} is not in the {self.dataset_name} python-pickle format "
                f"({type(err).__name__}: {err}); see {CIFAR_PAGE}"
            ) from err
        return _as_tensors(train), _as_tensors(test), list(train.classes)

    def _fit_statistics(self, pool: Dataset, train_indices: list[int]) -> None:
        """The 3x32x32 mean image of the training split, in [0, 1] units (docs/paper.md §5.1)."""
        assert isinstance(pool, TensorImageDataset)
        self.mean_image = pixel_moments(pool.images, train_indices)[0].float()
        self.mean = tuple(self.mean_image.mean((1, 2)).tolist())

    def train_transform(self) -> v2.Compose:
        """Zero-pad 4 + random 32x32 crop + horizontal flip on the mean-subtracted image (docs/paper.md §5.1)."""
        return cifar_transform(self._require_mean_image(), train=True)

    def eval_transform(self) -> v2.Compose:
        """The original 32x32 image minus the mean image, single view (docs/paper.md §5.1)."""
        return cifar_transform(self._require_mean_image(), train=False)

    def device_transform(self, *, train: bool) -> BatchAugmentation:
        """The batched, on-device form of ``train_transform()`` / ``eval_transform()`` (``gpu_resident=True``)."""
        return BatchAugmentation(mean_image=self._require_mean_image(), pad=4 if train else 0, flip=train)

    def _require_mean_image(self) -> torch.Tensor:
        if self.mean_image is None:
            raise RuntimeError("the mean image is computed in setup(); call setup() first")
        return self.mean_image


class CIFAR100DataModule(CIFAR10DataModule):
    """CIFAR-100 (fine labels), same recipe as CIFAR-10 (docs/paper.md §5.1)."""

    @dataclasses.dataclass(kw_only=True)
    class Options(CIFAR10DataModule.Options):
        num_classes: int | None = 100

    dataset_name = "CIFAR-100"
    torchvision_cls = CIFAR100
    files_cls = _CIFAR100Files
    mean = CIFAR100_MEAN


def _as_tensors(dataset: CIFAR10) -> TensorImageDataset:
    """torchvision's decoded HWC uint8 array and labels as an in-memory CHW dataset (no PIL round trip)."""
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return TensorImageDataset(images, torch.tensor(dataset.targets, dtype=torch.long))
