"""The resolvers of the configs: ``${run_name:...}`` (run directories, W&B names) and ``${fast_precision:...}``.

``fast_precision`` is the fast default precision of each accelerator, read by the trainer configs as
``${fast_precision:cpu}``:

bf16-mixed (autocast; weights, optimiser state and the loss stay fp32) wherever the hardware computes bf16
natively, because it roughly doubles a step's speed there without changing the recipe; where bf16 would be
emulated it is slower than full precision, so the choice falls back to ``16-mixed`` on older GPUs and
``32-true`` on CPUs. ``trainer.precision=32-true`` always forces full precision.
"""

from __future__ import annotations

import hashlib
import re

import torch
from omegaconf import OmegaConf

ACCELERATORS = ("cpu", "gpu")
MAX_RUN_NAME = 200  # file names may have 255 bytes


def run_name(override_dirname: str) -> str:
    """A directory-safe run name from Hydra's ``override_dirname`` ("default" without overrides).

    Long names are shortened and suffixed with a hash so that distinct commands stay distinct.
    """
    return shortened(re.sub(r"[^A-Za-z0-9._:+\-]+", "_", override_dirname) or "default", MAX_RUN_NAME)


def shortened(name: str, limit: int) -> str:
    """``name`` if it has at most ``limit`` characters, else its start and a hash of all of it (``limit`` long), so
    that distinct long names stay distinct."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[: limit - 11]}-{digest}"


def native_bf16_cpu() -> bool:
    """Whether this CPU has bf16 arithmetic (AVX512-BF16 or AMX); torch exposes the checks privately."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def native_bf16_gpu() -> bool:
    """Whether the visible CUDA GPU has bf16 arithmetic (Ampere and newer); True when none is visible, so a
    config composed on a login node keeps the GPU default."""
    if not torch.cuda.is_available():
        return True
    return torch.cuda.is_bf16_supported(including_emulation=False)


def fast_precision(accelerator: str) -> str:
    """Lightning's ``precision`` for ``accelerator`` ('cpu' or 'gpu'): see the module docstring."""
    if accelerator == "cpu":
        return "bf16-mixed" if native_bf16_cpu() else "32-true"
    if accelerator == "gpu":
        return "bf16-mixed" if native_bf16_gpu() else "16-mixed"
    raise ValueError(f"fast_precision: unknown accelerator {accelerator!r}; accepted: {', '.join(ACCELERATORS)}")


RESOLVERS = {"run_name": run_name, "fast_precision": fast_precision}


def register_resolvers() -> None:
    """Register the resolvers above with OmegaConf (once per process)."""
    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
