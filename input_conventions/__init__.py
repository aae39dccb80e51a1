"""What the network and the data must agree on about an input image, said once (docs/design.md §1).

``resattn`` states these facts in its timm pretrained cfgs (layout, normalisation, evaluation crop) and
``datamodules`` applies them when it prepares images; neither may import the other, so both import them from here.
This module imports nothing.
"""

# The two input layouts (docs/paper.md §4): an ImageNet network (stride-4 stem, 224x224) and its CIFAR twin (3x3
# stem, 32x32). A data config's ``model_family`` picks one, a variant belongs to one.
FAMILIES = ("imagenet", "cifar")

# Per-channel normalisation of the full training sets, in [0, 1] units. CIFAR's and Fashion-MNIST's are starting
# values: their datamodules recompute them on the training split actually used. CIFAR is not divided by a std
# (per-pixel mean subtraction only, docs/paper.md §5.1).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR_STD = (1.0, 1.0, 1.0)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)

# Single-crop evaluation of ImageNet-layout networks: resize the short side to image_size / 0.875 (256 for 224),
# then take the centre image_size x image_size crop (timm's crop_pct).
EVAL_CROP_FRACTION = 0.875


def eval_resize(image_size: int) -> int:
    """The short side an evaluation image is resized to before its centre ``image_size`` crop."""
    return round(image_size / EVAL_CROP_FRACTION)
