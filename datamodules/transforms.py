"""Preprocessing pipelines (torchvision ``transforms.v2``) for the recipes of docs/paper.md §5."""

import torch
from torchvision.transforms import v2

from input_conventions import IMAGENET_MEAN, IMAGENET_STD, eval_resize


def imagenet_statistics(in_chans: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's ``(mean, std)`` for RGB images; a grayscale image (``in_chans=1``) uses their channel average."""
    if in_chans == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,)


class SubtractMeanImage:
    """Subtract a fixed ``(C, H, W)`` mean image: CIFAR's per-pixel mean subtraction (docs/paper.md §5.1)."""

    def __init__(self, mean_image: torch.Tensor) -> None:
        self.mean_image = mean_image

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image - self.mean_image

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shape={tuple(self.mean_image.shape)})"


def cifar_transform(mean_image: torch.Tensor, *, train: bool) -> v2.Compose:
    """uint8 tensor → float in [0, 1] → minus the mean image; train adds zero-pad 4 + random crop + flip.

    The padding comes after the mean subtraction, as in the ResNet recipe the paper follows: the padded border
    is 0 in the network's input space, i.e. exactly the mean pixel.
    """
    steps = [v2.ToDtype(torch.float32, scale=True), SubtractMeanImage(mean_image)]
    if train:
        size = tuple(mean_image.shape[-2:])
        steps += [v2.RandomCrop(size, padding=4, fill=0), v2.RandomHorizontalFlip()]
    return v2.Compose(steps)


def small_image_transform(
    image_size: int, mean: tuple[float, ...], std: tuple[float, ...], *, pad: int, flip: bool
) -> v2.Compose:
    """uint8 tensor (e.g. Fashion-MNIST) → zero-pad ``pad`` + random crop (when ``pad`` > 0) + flip (when ``flip``);
    then scale and normalise. Evaluation: ``pad=0, flip=False``."""
    steps = [v2.RandomCrop(image_size, padding=pad, fill=0)] if pad > 0 else []
    steps += [v2.RandomHorizontalFlip()] if flip else []
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def imagenet_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...], *, train: bool) -> v2.Compose:
    """PIL image → train: RandomResizedCrop + flip (scale/aspect augmentation, docs/paper.md §5.3);
    eval: Resize(eval_resize(image_size)) + CenterCrop(image_size). Then scale to [0, 1] and normalise."""
    if train:
        geometry = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        geometry = [v2.Resize(eval_resize(image_size), antialias=True), v2.CenterCrop(image_size)]
    to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), v2.ToPureTensor()]
    return v2.Compose([*geometry, *to_tensor])


def pixel_moments(images: torch.Tensor, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel E[x] and E[x^2] (float64, x in [0, 1]) of uint8 ``images[indices]``, in bounded-memory chunks."""
    total = torch.zeros(images.shape[1:], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for chunk in torch.tensor(indices, dtype=torch.long).split(4096):
        pixels = images[chunk].double() / 255.0
        total += pixels.sum(0)
        total_sq += pixels.square().sum(0)
    count = max(1, len(indices))
    return total / count, total_sq / count
