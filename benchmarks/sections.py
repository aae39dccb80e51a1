"""The benchmark's sections (one function per section, named as in :data:`benchmarks.records.TITLES`): which cases
each measures, grouped how. Each :class:`Group` runs in a fresh process with its cases' rounds interleaved, so the
ratios inside a group survive changes in the machine's load; where a group holds several cases, the peak memory of
each one that a table shows comes from a process of its own. Each section reads the parsed command line
(:func:`benchmarks.run.parse_args`: its options, ``gpu`` and resattn's ``default`` filled in)."""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from benchmarks.cases import PROBE, Case
from benchmarks.records import TITLES, TWINS
from datamodules.configs import compose
from datamodules.cpu_cores import default_workers, usable_cores
from lightning_modules.config_resolvers import register_resolvers
from resattn import get_variant

FORMATS = ("nchw", "channels_last")
MODES = ("eager", "compile")
ALL_VARIANTS = ("resattn56", "resattn92", "resattn56_cifar", "resattn92_cifar")
COMPILE_ON_CPU = ("resattn56_cifar", "resattn92_cifar")  # compiling an ImageNet network takes minutes on a CPU
PYTORCHCV_DEFAULT = ("32-true", False)  # what pytorchcv's get_model(...) gives: fp32, NCHW (and eager)


@dataclass
class Group:
    """Cases measured in one process, each with its row label; ``memory``: the loops whose peak memory is measured
    in a process of their own; ``threads``: torch threads, whatever ``--threads`` says; ``timeout``: seconds for
    the process, whatever ``--timeout`` says."""

    cases: list[tuple[str, Case]]
    memory: tuple[str, ...] = ()
    threads: int | None = None
    timeout: float | None = None


def timing(s: Namespace, warmup: int, repeats: int, steps: int) -> dict[str, int]:
    """A section's warm-up, repeats and steps: ``--warmup/--repeats/--steps`` where given, else these (with
    ``--quick`` 2 repeats of half the steps)."""
    if s.quick:
        repeats, steps = 2, max(1, steps // 2)
    chosen = {"warmup": warmup, "repeats": repeats, "steps": steps}
    return {key: value if getattr(s, key) is None else getattr(s, key) for key, value in chosen.items()}


def _network_timing(s: Namespace, repeats: int = 3, cpu_steps: int = 1) -> dict[str, int]:
    """A network's timing: a GPU's steps are short, so more of them and a longer warm-up."""
    return timing(s, 5 if s.gpu else 2, repeats, 10 if s.gpu else cpu_steps)


def _loop_timing(s: Namespace) -> dict[str, int]:
    return timing(s, 3, 3, 20 if s.gpu else 4)


def _at_default(s: Namespace) -> dict[str, Any]:
    """The Case fields of resattn's default precision and memory format."""
    return {"precision": s.default[0], "channels_last": s.default[1]}


def resattn_default(device: str) -> tuple[str, bool, bool]:
    """``(precision, channels_last, compile)`` that ``python train.py trainer=cpu|gpu`` composes for ``device``."""
    register_resolvers()
    cfg = compose([f"trainer={'cpu' if device == 'cpu' else 'gpu'}"])
    return str(cfg.trainer.precision), bool(cfg.module.channels_last), bool(cfg.module.compile)


def compare(s: Namespace) -> list[Group]:
    """ImageNet Attention-56/92 at 224 against pytorchcv's twins: train and eval of every precision x format of
    both libraries in one process per network (the second network: fp32 and resattn's default only)."""
    fields = {"size": 224, "batch": s.batch, "device": s.device, **_network_timing(s, repeats=5, cpu_steps=2)}
    twins = {ours: theirs for theirs, ours in TWINS.items()}
    models = ("resattn56",) if s.quick else ("resattn56", "resattn92")
    defaults = {"resattn": s.default[:2], "pytorchcv": PYTORCHCV_DEFAULT}
    groups = []
    for index, model in enumerate(models):
        configs = [(p, f == "channels_last") for p in s.precisions for f in s.formats]
        if s.quick or index > 0:
            configs = [c for c in configs if c in defaults.values() or (index > 0 and c[0] == "32-true")]
        cases = [
            (
                f"{library} default" if config == defaults[library] else "",
                Case(loop, arch, library=library, precision=config[0], channels_last=config[1], **fields),
            )
            for config in configs
            for library, arch in (("resattn", model), ("pytorchcv", twins[model]))
            for loop in ("bare", "eval")
        ]
        groups.append(Group(cases, memory=("bare",)))
    below = {**fields, "size": 64, "warmup": 1, "repeats": 1, "steps": 1}
    for library, arch in (("resattn", models[0]), ("pytorchcv", twins[models[0]])):
        groups.append(Group([("below 224", Case("bare", arch, library=library, **below))]))
    return groups


def models(s: Namespace) -> list[Group]:
    """Every variant x size x precision x format x mode, train and eval, one process per network and size."""
    variants = s.variants or (("resattn56_cifar",) if s.quick else ALL_VARIANTS)
    modes = s.modes or (MODES if s.gpu else ("eager",))
    groups = []
    for variant in variants:
        for size in s.sizes or (get_variant(variant).input_size[-1],):
            configs = [
                (p, f == "channels_last", m == "compile") for m in modes for p in s.precisions for f in s.formats
            ]
            if variant in COMPILE_ON_CPU and not (s.gpu or s.quick or (*s.default[:2], True) in configs):
                configs.append((*s.default[:2], True))
            fields = {"size": size, "batch": s.batch if size >= 128 else s.small_batch, "device": s.device}
            fields |= _network_timing(s, cpu_steps=1 if size >= 128 else 3)
            cases = [
                ("", Case(loop, variant, precision=p, channels_last=cl, compile=c, **fields))
                for p, cl, c in configs
                for loop in ("bare", "eval")
            ]
            groups.append(Group(cases, memory=("bare", "eval")))
    return groups


OPTIONS = (  # row label, the fields that differ from all off
    ("all off (32-true, NCHW, eager, DataLoader)", {}),
    ("+ channels_last", {"channels_last": True}),
    ("+ bf16-mixed", {"precision": "bf16-mixed"}),
    ("+ torch.compile", {"compile": True}),
    ("+ GPU-resident data", {"data": "device"}),
    ("all on", {"channels_last": True, "precision": "bf16-mixed", "compile": True, "data": "device"}),
    ("all on but compile", {"channels_last": True, "precision": "bf16-mixed", "data": "device"}),
)


def options(s: Namespace) -> list[Group]:
    """The Lightning training path with each fast option alone, all off and all on, interleaved."""
    base = Case("lightning", s.loop_arch, batch=s.small_batch, data="dataloader", device=s.device, **_loop_timing(s))
    return [Group([(label, replace(base, **change)) for label, change in OPTIONS])]


LOOP_ROWS = (  # loop, data, row label
    ("bare", "dataloader", "bare PyTorch loop (forward, loss, backward, SGD step, zero_grad)"),
    ("bare+metrics", "dataloader", "bare + ImageClassifier's per-step metric updates and non-finite flag"),
    ("lightning-minimal", "dataloader", "Lightning, training_step returns the loss only"),
    ("lightning", "dataloader", "Lightning + ImageClassifier, as train.py runs it"),
    ("bare", "device", "bare PyTorch loop, GPU-resident data"),
    ("lightning", "device", "Lightning + ImageClassifier, GPU-resident data"),
)
PROBE_ROWS = (
    ("bare", "device", "bare PyTorch loop, GPU-resident data"),
    ("lightning-minimal", "device", "Lightning, training_step returns the loss only"),
    ("lightning", "device", "Lightning + ImageClassifier"),
    ("bare", "dataloader", "bare PyTorch loop, DataLoader"),
    ("lightning-minimal", "dataloader", "Lightning, training_step returns the loss only, DataLoader"),
    ("lightning", "dataloader", "Lightning + ImageClassifier, DataLoader"),
)


def loops(s: Namespace) -> list[Group]:
    """Lightning against a bare loop on the same network, data and batch, and on the one-layer probe: all in one
    process (``--quick``: the bare and Lightning loops only)."""
    network = Case("bare", s.loop_arch, batch=s.small_batch, device=s.device, **_loop_timing(s))
    probe = replace(network, arch=PROBE, **timing(s, 10, 3, 50))
    cases = [
        (label, replace(template, loop=loop, data=data))
        for template, rows in ((network, LOOP_ROWS), (probe, PROBE_ROWS))
        for loop, data, label in rows
        if not s.quick or loop in ("bare", "lightning")
    ]
    return [Group(cases)]


def scaling(s: Namespace) -> list[Group]:
    """Attention-56 at resattn's default against batch size (at 224) and input size: every case alone."""
    fields = {"device": s.device, **_at_default(s), **_network_timing(s)}
    grid = [(b, 224) for b in ((64, 128, 256) if s.gpu else (1, 2, 4, 8))]
    grid += [(32 if s.gpu else 2, size) for size in (32, 64, 128, 224, 320, 448)]
    return [
        Group([("", Case(loop, "resattn56", size=size, batch=batch, **fields))])
        for batch, size in grid
        for loop in ("bare", "eval")
    ]


def data(s: Namespace) -> list[Group]:
    """CIFAR-10's training batches from the datamodule's DataLoader (no workers and train.py's default) and from
    the GPU-resident path, each alone, without a network."""
    fields = {"batch": s.small_batch, **timing(s, 1, 3, 20)}
    loader = "torchvision transforms.v2 in the datamodule's DataLoader, num_workers="
    cases = [
        (f"{loader}{n}", Case("data", data="dataloader", workers=n, **fields)) for n in {0: 0, default_workers(): 0}
    ]
    label = "GPU-resident: batched crop/flip on the device (data.gpu_resident=true)"
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cases += [(label, Case("data", data="device", device=device, **fields)) for device in devices]
    return [Group([case]) for case in cases]


FORMATS_ROWS = (  # row label, data, device
    ("ImageFolder + PIL", "folder", "cpu"),
    ("Hugging Face datasets (save_to_disk) + PIL", "hf", "cpu"),
    ("litdata shards + PIL", "streaming", "cpu"),
    ("litdata shards + nvJPEG on the GPU", "gpu-decode", "cuda"),
)


def formats(s: Namespace) -> list[Group]:
    """The ImageNet training path from each storage format, alone, one torch thread: one core's img/s."""
    fields = {"batch": s.small_batch, **timing(s, 1, 3, 4)}
    return [
        Group([(label, Case("data", data=name, device=device, **fields))], threads=1)
        for label, name, device in FORMATS_ROWS
        if device == "cpu" or torch.cuda.is_available()
    ]


def recipe(s: Namespace) -> list[Group]:
    """The paper's CIFAR Attention-92 schedule through the real training path at resattn's default (both data
    paths interleaved), and ImageNet Attention-56 training at resattn's default, alone."""
    default = {"device": s.device, **_at_default(s)}
    base = Case("lightning", "resattn92_cifar", batch=64, compile=s.default[2], **default, **_loop_timing(s))
    imagenet = Case("bare", "resattn56", size=224, batch=s.batch, **default, **_network_timing(s))
    paths = [("DataLoader (default)", "dataloader"), ("data.gpu_resident=true", "device")]
    return [
        Group([(label, replace(base, data=data)) for label, data in paths]),
        Group([("ImageNet network", imagenet)]),
    ]


def sharing(s: Namespace) -> list[Group]:
    """A short training (tiny network, Fashion-MNIST, 60 batches) end to end, alone and beside one busy process,
    with torch's default thread count fixed (before) and with the threads following the free cores (after, the
    default), plus the latter beside it with one DataLoader worker: in one process, interleaved; ``--quick``: one
    round. The process may take ``--timeout`` seconds per round."""
    fields = timing(s, 0, 3, 60) | ({"repeats": s.repeats or 1, "steps": s.steps or 60} if s.quick else {})
    batch = compose(["data=fashion_mnist"]).data.batch_size
    base = Case("train.py", "tiny", data="fashion_mnist", batch=batch, workers=default_workers(), **fields)
    variants = [(f"before: cpu_threads={usable_cores()} fixed", usable_cores()), ("after: cpu_threads=null", 0)]
    cases = [
        (label, replace(base, cpu_threads=threads, neighbour=neighbour))
        for label, threads in variants
        for neighbour in (False, True)
    ]
    cases.append(("after, data.num_workers=1", replace(base, workers=1, neighbour=True)))
    return [Group(cases, threads=1, timeout=s.timeout * fields["repeats"])]


SECTIONS: dict[str, Callable[[Namespace], list[Group]]] = {name: globals()[name] for name in TITLES}
QUICK_SECTIONS = ("compare", "loops", "data")
