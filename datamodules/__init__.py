"""LightningDataModules for resattn: CIFAR-10/100, ImageNet, any ImageFolder tree, Fashion-MNIST, synthetic data.

All share the constructor arguments of ``ImageDataModule`` and the split policy described there (validation
carved from the training set; the test split only for ``test_dataloader``). Recipes: PAPER.md §5.
"""

from datamodules.base import ImageDataModule
from datamodules.cifar import CIFAR10DataModule, CIFAR100DataModule
from datamodules.fashion_mnist import FashionMNISTDataModule
from datamodules.folder import ImageFolderDataModule, ImageNetDataModule
from datamodules.synthetic import SyntheticDataModule

__all__ = [
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImageNetDataModule",
    "SyntheticDataModule",
]
