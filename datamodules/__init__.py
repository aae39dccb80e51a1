"""LightningDataModules for resattn: CIFAR-10/100, ImageNet, any ImageFolder tree, Fashion-MNIST (plain or cluttered),
synthetic data.

All accept the options of ``DataOptions`` as keyword arguments, each adding its own in a nested ``Options``
dataclass (the keys of its ``conf/data`` YAML), and share the split policy described in ``ImageDataModule``
(validation carved from the training set; the test split only for ``test_dataloader``). Recipes: docs/paper.md §5.
"""

from datamodules.base import ImageDataModule
from datamodules.cifar import CIFAR10DataModule, CIFAR100DataModule
from datamodules.cluttered import ClutteredFashionMNISTDataModule
from datamodules.fashion_mnist import FashionMNISTDataModule
from datamodules.folder import ImageFolderDataModule, ImageNetDataModule
from datamodules.options import DataOptions
from datamodules.synthetic import SyntheticDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClutteredFashionMNISTDataModule",
    "DataOptions",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
    "SyntheticDataModule",
]
