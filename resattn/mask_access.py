"""Seeing and changing the soft masks of a network's attention modules while it runs (docs/paper.md §6):
``capture_masks``, ``capture_mask_logits`` and ``replace_masks``, forward hooks that live only inside a ``with``
block. A mixin of :class:`resattn.net.ResidualAttentionNet`, which inherits these methods."""

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from resattn.attention import AttentionModule


class MaskAccess:
    """The attention modules of an ``nn.Module`` and hooks on their masks."""

    def attention_modules(self) -> Iterator[tuple[str, AttentionModule]]:
        """``(name, module)`` for every attention module, in forward order (e.g. ``stages.0.attention.0``)."""
        for name, module in self.named_modules():
            if isinstance(module, AttentionModule):
                yield name, module

    @contextmanager
    def capture_masks(self) -> Iterator[Mapping[str, torch.Tensor]]:
        """Collect the soft masks M of every forward pass run inside the block.

        ``with net.capture_masks() as masks: net(x)`` fills ``masks`` with ``{module name: M}``, detached,
        shaped like the module's trunk output. Hooks are removed on exit, so nothing is kept otherwise.
        """
        masks: dict[str, torch.Tensor] = {}
        handles = [
            module.mask.register_forward_hook(lambda _mod, _inp, out, key=name: masks.__setitem__(key, out.detach()))
            for name, module in self.attention_modules()
        ]
        try:
            yield masks
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def capture_mask_logits(self) -> Iterator[Mapping[str, torch.Tensor]]:
        """Collect the mask logits of every forward pass run inside the block (as :meth:`capture_masks`).

        The logits are what each mask's activation squashes (:meth:`resattn.mask.MaskActivation.logits`):
        ``M = sigmoid(logits)`` for the ``mixed`` and ``spatial`` mask types, ``M = logits / |logits|`` over
        channels for ``channel``. Their spread says how far a mask can move the trunk. They are the network's own,
        also inside :meth:`replace_masks`.
        """
        logits: dict[str, torch.Tensor] = {}

        def hook(activation: nn.Module, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor, key: str) -> None:
            with torch.no_grad():
                logits[key] = activation.logits(inputs[0]).detach()

        handles = [
            module.mask.activation.register_forward_hook(partial(hook, key=name))
            for name, module in self.attention_modules()
        ]
        try:
            yield logits
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def replace_masks(self, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """Replace every attention module's soft mask M by ``fn(module name, M)`` before the module applies it
        (``(1 + M) * T`` or ``M * T``), in every forward pass run inside the block: interventions such as a
        per-channel mean mask, or another image's mask.

        The replacement must broadcast to M's shape (e.g. ``(1, C, 1, 1)``); it is expanded to it. It runs before
        :meth:`capture_masks`' hooks, so captured masks (and ``forward_intermediates``' masks) are the ones
        applied. Within nested blocks the innermost replacement is applied first.
        """

        def hook(_mask: nn.Module, _inputs: tuple[torch.Tensor, ...], out: torch.Tensor, key: str) -> torch.Tensor:
            new = fn(key, out)
            if not isinstance(new, torch.Tensor) or not _broadcasts_to(new.shape, out.shape):
                shape = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
                raise ValueError(
                    f"replace_masks: the replacement for {key}'s mask {tuple(out.shape)} is {shape}; it must be a "
                    "tensor that broadcasts to the mask's shape"
                )
            return new.expand_as(out)

        handles = [
            module.mask.register_forward_hook(partial(hook, key=name), prepend=True)
            for name, module in self.attention_modules()
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    """Whether a tensor of ``shape`` broadcasts to exactly ``target``."""
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False
