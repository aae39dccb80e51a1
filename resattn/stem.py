"""The network's first layers and the input check every forward path (features_only, scripted, traced,
exported) starts with."""

import torch
from torch import nn

from resattn.mask import pooled_size
from resattn.units import BNReLU, conv3x3


def _shape_repr(shape: list[int]) -> str:
    """``tuple(shape)``'s repr, in a form TorchScript compiles."""
    dims = [str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


@torch.fx.wrap
def check_input(x: torch.Tensor, in_chans: int, min_size: int) -> torch.Tensor:
    """``x``, once checked: clear errors for inputs the network cannot take (not ``(N, C, H, W)``, other
    channels, too small).

    TorchScript compiles it and FX records it as one call (``torch.fx.wrap``) instead of tracing its
    branches, so scripted and traced networks keep the checks (returning ``x`` keeps the call in FX
    graphs that drop unused nodes, as feature extractors do); torch.compile and torch.export trace
    through it, where the size test becomes a bound on the input's shape.
    """
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images (N, C, H, W), got a tensor of shape {_shape_repr(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(
            f"expected {in_chans} input channel(s), got {x.shape[1]} (input shape {_shape_repr(x.shape)}); "
            f"build the model with in_chans={x.shape[1]} or convert the images"
        )
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f"input of size {_shape_repr(x.shape[2:])} is too small: the deepest attention mask needs at least "
            f"{min_size}x{min_size} pixels"
        )
    return x


class Stem(nn.Module):
    """ImageNet: 7x7/2 conv, BN-ReLU, 3x3/2 max-pool (Caffe ceil mode). CIFAR: 3x3 conv (+BN-ReLU when the
    units are post-activation). Also checks the input, because every path (features_only too) starts here."""

    def __init__(self, family: str, in_chans: int, out_channels: int, preactivation: bool) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.min_input_size = 1
        if family == "imagenet":
            self.conv = nn.Conv2d(in_chans, out_channels, 7, stride=2, padding=3, bias=False)
            self.act: nn.Module = BNReLU(out_channels)
            self.pool: nn.Module = nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)
            self.reduction = 4
        else:
            self.conv = conv3x3(in_chans, out_channels)
            self.act = nn.Identity() if preactivation else BNReLU(out_channels)
            self.pool = nn.Identity()
            self.reduction = 1

    def output_size(self, size: int) -> int:
        if self.reduction == 1:
            return size
        return pooled_size((size - 1) // 2 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_input(x, self.in_chans, self.min_input_size)
        return self.pool(self.act(self.conv(x)))
