"""Fashion-MNIST: 28x28 grayscale, 10 classes; pad-4 random crop + flip, normalised by the training mean/std.

Lookup order for the four IDX files (``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, plain or ``.gz``):
``<root>/FashionMNIST/raw`` (torchvision's layout), ``<root>`` itself, then ``system_dir`` (where the Debian
package ``dataset-fashion-mnist`` installs them); if none has all four, torchvision downloads into ``<root>``
when ``download=True``. The files are parsed by torchvision's IDX readers; a ``.gz`` is decompressed into a
temporary directory first, so nothing is written next to the data.
"""

import dataclasses
import gzip
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets import FashionMNIST
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.transforms import v2

from datamodules.base import ImageDataModule
from datamodules.datasets import TensorImageDataset
from datamodules.gpu_resident import BatchAugmentation
from datamodules.options import DataOptions
from datamodules.transforms import pixel_moments, small_image_transform
from input_conventions import FASHION_MNIST_MEAN, FASHION_MNIST_STD

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_PAGE = "https://github.com/zalandoresearch/fashion-mnist"
IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _read_idx(path: Path, reader: Callable[[str], torch.Tensor]) -> torch.Tensor:
    """Parse an IDX file with torchvision's ``reader``, decompressing a ``.gz`` into a temporary file first."""
    try:
        if path.suffix != ".gz":
            return reader(str(path))
        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / path.stem
            with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            return reader(str(plain))
    except (OSError, EOFError, AssertionError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not a valid IDX file ({type(err).__name__}: {err})") from err


class FashionMNISTDataModule(ImageDataModule):
    """Fashion-MNIST from local IDX files (Debian ``dataset-fashion-mnist``) or a torchvision download.

    ``mean`` / ``std`` start as the published full-training-set values and are recomputed in ``setup`` on the
    training split actually used (after the validation split is carved out).
    """

    @dataclasses.dataclass(kw_only=True)
    class Options(DataOptions):
        num_classes: int | None = len(FashionMNIST.classes)
        in_chans: int = 1
        image_size: int = 28
        model_family: str = "cifar"
        download: bool = False  # fetch the four files into <root>/FashionMNIST/raw when no local copy is found
        system_dir: str = DEBIAN_DIR  # searched after root
        crop_padding: int = 4  # training crops: zero-pad this much, then crop back to 28x28 (0: no crop)
        flip: bool = True  # training images flipped left-right with probability 0.5

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.crop_padding < 0:
                raise ValueError(f"crop_padding must be >= 0 (0: no random crop), got {self.crop_padding}")

    fixed = ("num_classes", "in_chans", "image_size")
    dataset_name = "Fashion-MNIST"
    mean = FASHION_MNIST_MEAN
    std = FASHION_MNIST_STD

    def search_dirs(self) -> list[Path]:
        """Where the IDX files are looked for, in order."""
        return [Path(self.root) / "FashionMNIST" / "raw", Path(self.root), Path(self.hparams.system_dir)]

    def find_files(self) -> dict[tuple[str, str], Path] | None:
        """The four IDX files from the first directory that has all of them (plain or gzipped), else None."""
        for directory in self.search_dirs():
            found = {}
            for key, name in IDX_FILES.items():
                path = next((p for p in (directory / name, directory / f"{name}.gz") if p.is_file()), None)
                if path is None:
                    break
                found[key] = path
            else:
                return found
        return None

    def prepare_data(self) -> None:
        """Download into ``<root>/FashionMNIST/raw`` when ``download=True`` and no local copy is found."""
        if self.hparams.download:
            urls = [f"{FashionMNIST.mirrors[0]}{name}" for name, _ in FashionMNIST.resources]
            self._download(
                lambda: self.find_files() is not None,
                lambda: FashionMNIST(self.root, train=True, download=True),
                urls,
                f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu, into {DEBIAN_DIR}), or download the four "
                "files on a machine that has network access and put them into "
                f"{Path(self.root) / 'FashionMNIST' / 'raw'}; then run without data.download=true.",
            )

    def load_splits(self) -> tuple[Dataset, Dataset, list[str]]:
        files = self.find_files()
        if files is None:
            looked = ", ".join(str(d) for d in self.search_dirs())
            raise FileNotFoundError(
                f"Fashion-MNIST not found: looked in {looked} for {', '.join(IDX_FILES.values())} (plain or .gz). "
                f"Get it with `apt-get install dataset-fashion-mnist` (installs into {DEBIAN_DIR}) or set "
                f"data.download=true to download it into {self.root} ({FASHION_MNIST_PAGE})."
            )
        splits = []
        for split in ("train", "test"):
            images = _read_idx(files[(split, "images")], read_image_file)
            labels = _read_idx(files[(split, "labels")], read_label_file)
            if images.shape[1:] != (28, 28) or len(images) != len(labels):
                raise ValueError(
                    f"{files[(split, 'images')]} and {files[(split, 'labels')]} do not form a Fashion-MNIST split: "
                    f"images {tuple(images.shape)}, labels {tuple(labels.shape)}"
                )
            if len(labels) and int(labels.max()) >= self.num_classes:
                raise ValueError(f"{files[(split, 'labels')]} has label {int(labels.max())} >= {self.num_classes}")
            splits.append(TensorImageDataset(images.unsqueeze(1), labels))
        return splits[0], splits[1], list(FashionMNIST.classes)

    def _fit_statistics(self, pool: Dataset, train_indices: list[int]) -> None:
        """Mean and std over all pixels of the training split, in [0, 1] units."""
        assert isinstance(pool, TensorImageDataset)
        mean_image, square_mean_image = pixel_moments(pool.images, train_indices)
        mean = mean_image.mean().item()
        self.mean = (mean,)
        self.std = ((square_mean_image.mean().item() - mean**2) ** 0.5,)

    def train_transform(self) -> v2.Compose:
        """Zero-pad ``crop_padding`` + random 28x28 crop + horizontal flip (as configured), then normalise."""
        hp = self.hparams
        return small_image_transform(self.image_size, self.mean, self.std, pad=hp.crop_padding, flip=hp.flip)

    def eval_transform(self) -> v2.Compose:
        """Normalise only."""
        return small_image_transform(self.image_size, self.mean, self.std, pad=0, flip=False)

    def device_transform(self, *, train: bool) -> BatchAugmentation:
        """The batched, on-device form of ``train_transform()`` / ``eval_transform()`` (``gpu_resident=True``):
        the border is padded in raw pixels (black), as torchvision pads before normalising."""
        hp = self.hparams
        pad, flip = (hp.crop_padding, hp.flip) if train else (0, False)
        return BatchAugmentation(mean=self.mean, std=self.std, pad=pad, flip=flip, pad_before_normalize=True)
