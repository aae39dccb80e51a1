"""ImageFolder trees: ImageNet (docs/paper.md §5.3) and any ``<class>/<image>`` folder, with ImageNet-style transforms.

Corrupt or truncated images. Default (``skip_corrupt=False``): nothing is scanned up front (ImageNet has 1.3 M
files); the loader decodes each image fully and turns a decoding failure into an ``OSError`` that names the file
and the option below. With ``skip_corrupt=True`` every image is decoded once in ``setup`` (threaded), unreadable
files are dropped, a warning gives their count and ``skipped_files`` lists them.
"""

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from datamodules.base import ImageDataModule
from datamodules.cpu_cores import usable_cores
from datamodules.errors import DamagedDataError
from datamodules.options import DataOptions
from datamodules.splits import split_indices
from datamodules.transforms import imagenet_statistics, imagenet_transform

log = logging.getLogger(__name__)

IMAGENET_PAGE = "https://image-net.org/download.php"
PIL_MODES = {1: "L", 3: "RGB"}
DECODE_ERRORS = (OSError, SyntaxError, ValueError)  # what PIL raises for unreadable, truncated or broken files


def load_image(path: str, mode: str = "RGB") -> Image.Image:
    """Decode ``path`` fully into ``mode``; a corrupt or truncated file raises a DamagedDataError (an OSError)
    naming it."""
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except DECODE_ERRORS as err:
        raise DamagedDataError(
            f"cannot decode image file {path} ({type(err).__name__}: {err}). Fix or delete the file, or set "
            "data.skip_corrupt=true to skip unreadable images"
        ) from err


def is_readable_image(path: str) -> bool:
    """Whether PIL can fully decode ``path`` (``Image.verify`` alone misses truncated JPEGs)."""
    try:
        with Image.open(path) as image:
            image.load()
    except DECODE_ERRORS:
        return False
    return True


class _FolderDataModule(ImageDataModule):
    """ImageFolder reading, corrupt-file handling and the ImageNet-style transforms shared by the subclasses."""

    @dataclasses.dataclass(kw_only=True)
    class Options(DataOptions):
        in_chans: int = 3  # 1 reads the images as grayscale
        image_size: int = 224
        model_family: str = "imagenet"
        skip_corrupt: bool = False  # decode every image once in setup and drop the unreadable ones

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.in_chans not in PIL_MODES:
            raise ValueError(f"in_chans must be 1 (grayscale) or 3 (RGB) for image folders, got {self.in_chans}")
        if not self.root:
            raise ValueError(f"{type(self).__name__} needs a root: set data.root=/path/to/images on the command line")
        self.mean, self.std = imagenet_statistics(self.in_chans)
        self.skipped_files: list[str] = []

    def _open_folders(
        self, train_dir: Path, test_dir: Path | None, hint: str
    ) -> tuple[ImageFolder, ImageFolder | None]:
        """ImageFolders over ``train_dir`` (class count checked) and ``test_dir`` (same classes required), with
        unreadable files dropped when ``skip_corrupt`` is set."""
        train = self._image_folder(train_dir, hint)
        self._check_config("num_classes", len(train.classes), f"class directories in {train_dir}")
        test = None if test_dir is None else self._image_folder(test_dir, hint)
        if test is not None and test.classes != train.classes:
            raise ValueError(
                f"the class directories of {test_dir} differ from those of {train_dir} (only in train: "
                f"{sorted(set(train.classes) - set(test.classes))}, only in {test_dir.name}: "
                f"{sorted(set(test.classes) - set(train.classes))}); label indices would not line up"
            )
        if self.hparams.skip_corrupt:
            for dataset in (train, test):
                if dataset is not None:
                    self._drop_unreadable(dataset)
        return train, test

    def _image_folder(self, path: Path, hint: str) -> ImageFolder:
        try:
            return ImageFolder(str(path), loader=partial(load_image, mode=PIL_MODES[self.in_chans]))
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err} Expected layout: {hint}") from err

    def _drop_unreadable(self, dataset: ImageFolder) -> None:
        """Decode every image once (threaded); drop the unreadable ones, warn and record them in skipped_files."""
        paths = [path for path, _ in dataset.samples]
        with ThreadPoolExecutor(max_workers=min(32, usable_cores())) as pool:
            readable = list(pool.map(is_readable_image, paths))
        skipped = [path for path, ok in zip(paths, readable, strict=True) if not ok]
        if skipped:
            log.warning("skipped %d unreadable image(s) under %s: %s", len(skipped), dataset.root, skipped[:10])
            self.skipped_files += skipped
            dataset.samples = [sample for sample, ok in zip(dataset.samples, readable, strict=True) if ok]
            dataset.imgs = dataset.samples
            dataset.targets = [label for _, label in dataset.samples]

    def train_transform(self) -> v2.Compose:
        """RandomResizedCrop(image_size) + flip + normalise (scale/aspect augmentation, docs/paper.md §5.3)."""
        return imagenet_transform(self.image_size, self.mean, self.std, train=True)

    def eval_transform(self) -> v2.Compose:
        """Resize(eval_resize(image_size)) + CenterCrop(image_size) + normalise (single crop, docs/paper.md §5.3)."""
        return imagenet_transform(self.image_size, self.mean, self.std, train=False)


class ImageFolderDataModule(_FolderDataModule):
    """Any ImageFolder tree, with ImageNet-style transforms (default 224x224 RGB, ``model_family="imagenet"``).

    The classes are the sub-directories of the training folder, in sorted order (torchvision's ImageFolder); with
    ``num_classes=None`` (the config's default) their count is taken from there, a number is checked against it.

    Layouts: ``root/train/<class>/*`` with an optional ``root/test`` (preferred) or ``root/val`` used as the
    test set; or a flat ``root/<class>/*`` tree. Without a separate test folder, ``test_fraction`` of the images
    is carved out as the test set (seeded by ``split_seed``); the validation split always comes from the rest.
    """

    @dataclasses.dataclass(kw_only=True)
    class Options(_FolderDataModule.Options):
        num_classes: int | None = None
        test_fraction: float = 0.1  # carved from the images when there is no root/test or root/val

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if not 0 < self.hparams.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.hparams.test_fraction}")

    def _layout_hint(self, root: Path) -> str:
        return (
            f"either {root}/train/<class>/<image> (plus optional {root}/test/<class>/<image> or "
            f"{root}/val/<class>/<image> as the test set) or {root}/<class>/<image> (split into train/val/test "
            "by data.val_fraction and data.test_fraction). Point data.root=... at such a folder."
        )

    def load_splits(self) -> tuple[Dataset, Dataset, list[str]]:
        root = Path(self.root)
        hint = self._layout_hint(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root} does not exist. Expected {hint}")
        train_dir, test_dir = root / "train", None
        if train_dir.is_dir():
            test_dirs = [root / name for name in ("test", "val") if (root / name).is_dir()]
            test_dir = test_dirs[0] if test_dirs else None
            if len(test_dirs) == 2:
                log.warning("%s and %s both exist: %s is the test set and %s is not used", *test_dirs, *test_dirs)
        else:
            train_dir = root  # a flat <class>/<image> tree
        train, test = self._open_folders(train_dir, test_dir, hint)
        if test is not None:
            return train, test, train.classes
        kept, carved = split_indices(len(train), self.hparams.test_fraction, self.hparams.split_seed)
        return Subset(train, sorted(kept)), Subset(train, sorted(carved)), train.classes


class ImageNetDataModule(_FolderDataModule):
    """ILSVRC-2012 (docs/paper.md §5.3): ``root/train/<wnid>/*.JPEG``; ``root/val/<wnid>/*.JPEG`` is the test set.

    The model-selection split is carved from train (``val_fraction``), so the official val set stays a test set.
    """

    @dataclasses.dataclass(kw_only=True)
    class Options(_FolderDataModule.Options):
        num_classes: int | None = 1000

    fixed = ("in_chans",)
    dataset_name = "ImageNet"

    def load_splits(self) -> tuple[Dataset, Dataset, list[str]]:
        root = Path(self.root)
        train_dir, val_dir = root / "train", root / "val"
        hint = (
            f"{train_dir}/<wnid>/*.JPEG and {val_dir}/<wnid>/*.JPEG. ImageNet cannot be downloaded "
            f"automatically: get ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from {IMAGENET_PAGE}, "
            "extract the per-class train tars into train/<wnid>/, sort the flat val images into val/<wnid>/ "
            "using the devkit's ground truth, then set data.root=/path/to/imagenet."
        )
        missing = [str(d) for d in (train_dir, val_dir) if not d.is_dir()]
        if missing:
            raise FileNotFoundError(f"ImageNet not found: looked for {' and '.join(missing)}. Expected {hint}")
        if not any(entry.is_dir() for entry in val_dir.iterdir()):
            raise FileNotFoundError(f"{val_dir} has no class folders (is it the flat val archive?). Expected {hint}")
        train, test = self._open_folders(train_dir, val_dir, hint)
        return train, test, train.classes
