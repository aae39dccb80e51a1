"""What a benchmark case is (:class:`Case`: a loop of :data:`LOOPS` over a network or a data pipeline, in one
configuration) and how it is built into the work it times (:func:`build`). Networks read one fixed random batch or
CIFAR-10's datamodule (:mod:`benchmarks.pipelines`); precisions are the trainer's names; every network trains with
the paper's SGD. The ``train.py`` loop is built in :mod:`benchmarks.worker`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from benchmarks.pipelines import batches, cifar, image_format
from datamodules.configs import compose, options
from lightning_modules import ImageClassifier
from lightning_modules.optim import build_optimizer
from resattn import get_variant
from resattn.summary import count_gmacs

ROOT = Path(__file__).resolve().parents[1]
# what one step of each loop is: BENCHMARKS.md, "How it measures"; the train.py loop: worker._script
LOOPS = ("eval", "bare", "bare+metrics", "lightning-minimal", "lightning", "data", "train.py")
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}  # the trainer's names
NETWORK_DATA = ("fixed", "dataloader", "device")
PIPELINES = ("dataloader", "device", "folder", "hf", "streaming", "gpu-decode")
LIBRARIES = ("resattn", "pytorchcv")
PROBE = "linear-probe"  # one linear layer: its ~1 ms steps make the loops' own per-step costs visible
# the paper's SGD (docs/paper.md §5.1); build_optimizer uses the fused implementation on CUDA
OPTIMIZER = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "fused": True}
Stamp = Callable[[], None]


@dataclass(frozen=True)
class Case:
    """One thing timed: a loop over a network (or a data pipeline alone) in one configuration."""

    loop: str
    arch: str = ""  # a timm name, a pytorchcv name (library pytorchcv), PROBE; "" for a data pipeline
    library: str = "resattn"
    size: int = 32
    batch: int = 64
    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False
    data: str = "fixed"
    workers: int = 0  # DataLoader workers of the dataloader pipeline (train.py: data.num_workers)
    device: str = "cpu"
    warmup: int = 2
    repeats: int = 3
    steps: int = 1
    cpu_threads: int = 0  # train.py: its cpu_threads (0: null, the threads follow the free cores)
    neighbour: bool = False  # train.py: beside a busy process

    def __post_init__(self) -> None:
        for name, accepted in (("loop", LOOPS), ("library", LIBRARIES), ("precision", tuple(PRECISIONS))):
            if getattr(self, name) not in accepted:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; accepted: {', '.join(accepted)}")
        if self.loop == "train.py":
            for group, name in (("model", self.arch), ("data", self.data)):
                names = options(group)
                if name not in names:
                    raise ValueError(f"train.py takes a {group} config ({', '.join(names)}), not {name!r}")
        elif self.cpu_threads or self.neighbour:
            raise ValueError("cpu_threads and neighbour are options of the train.py loop only")
        elif self.data not in (data := PIPELINES if self.loop == "data" else NETWORK_DATA):
            raise ValueError(f"the {self.loop} loop reads data from {', '.join(data)}, not {self.data!r}")
        if (self.loop == "data") == bool(self.arch):
            raise ValueError("a data case has no arch; every other case needs one")
        if self.library == "pytorchcv" and self.loop not in ("eval", "bare"):
            raise ValueError("pytorchcv networks run in the eval and bare loops only (the others are resattn's)")
        if min(self.batch, self.repeats, self.steps) < 1 or min(self.warmup, self.cpu_threads) < 0:
            raise ValueError("batch, repeats and steps must be at least 1, warmup and cpu_threads at least 0")

    def autocast(self) -> torch.autocast:
        dtype = PRECISIONS[self.precision]
        return torch.autocast(torch.device(self.device).type, dtype=dtype or torch.float32, enabled=dtype is not None)


@dataclass
class Subject:
    """A built case: ``run(n, stamp)`` calls ``stamp()`` when the timed work starts and after each of ``n`` steps
    (or once at its end); ``others()``, where given, the other processes' CPU share during each timed run."""

    run: Callable[[int, Stamp], None]
    params_m: float | None = None
    gmacs: float | None = None
    others: Callable[[], list[float]] | None = None


def _classifier(case: Case, compile: bool) -> Any:
    """``ImageClassifier`` of the case's network (the probe swaps in one linear layer)."""
    arch = "resattn_tiny_cifar" if case.arch == PROBE else case.arch
    classes = 1000 if case.data == "fixed" and get_variant(arch).family == "imagenet" else 10
    module = ImageClassifier(
        arch,
        classes,
        optimizer=OPTIMIZER,
        scheduler={"name": "none"},
        channels_last=case.channels_last,
        compile=compile,
    )
    if case.arch == PROBE:
        module.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * case.size * case.size, 10))
    return module


def _network(case: Case) -> Subject:
    """The eval and bare loops on a fixed batch or CIFAR-10's datamodule."""
    device = torch.device(case.device)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as conf/trainer/gpu.yaml
    module = None
    if case.library == "pytorchcv":
        try:
            from pytorchcv.model_provider import get_model
        except ImportError as err:
            raise ImportError("pytorchcv is not installed: pip install -e '.[bench]'") from err
        net = get_model(case.arch, num_classes=1000)
        net = net.to(memory_format=torch.channels_last) if case.channels_last else net
        criterion: nn.Module = nn.CrossEntropyLoss()
    else:
        module = _classifier(case, compile=False).to(device)
        net, criterion = module.net, module.criterion
    net.to(device)
    params_m = sum(p.numel() for p in net.parameters()) / 1e6
    gmacs = count_gmacs(net, (3, case.size, case.size)) if case.data == "fixed" else None
    if case.compile:
        net.compile()
    if case.data == "fixed":
        classes = 1000 if module is None else module.hparams.num_classes
        images, labels = torch.randn(case.batch, 3, case.size, case.size), torch.randint(0, classes, (case.batch,))
        fixed = (images.to(device), labels.to(device))
        stream: Any = iter(lambda: fixed, None)
    else:
        stream = batches(cifar(case.data, case.batch, case.workers), device)
    optimizer = build_optimizer(net, OPTIMIZER)
    scaler = torch.amp.GradScaler(device.type, enabled=case.precision == "16-mixed")
    autocast, nonfinite = case.autocast(), torch.zeros((), dtype=torch.bool, device=device)

    def run(n: int, stamp: Stamp) -> None:
        nonlocal nonfinite
        net.train(case.loop != "eval")
        stamp()
        for _ in range(n):
            images, targets = (t.to(device, non_blocking=True) for t in next(stream))
            if case.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if case.loop == "eval":
                with torch.inference_mode(), autocast:
                    net(images)
                stamp()
                continue
            with autocast:
                logits = net(images)
                loss = criterion(logits, targets)
            if case.loop == "bare+metrics":
                module.metrics["train_acc"].update(logits, targets)
                module.losses["train_loss"].update(loss.detach(), weight=targets.numel())
                nonfinite |= ~torch.isfinite(loss.detach())
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            stamp()
        if nonfinite:
            raise RuntimeError("non-finite loss")

    return Subject(run, params_m, gmacs)


def _lightning(case: Case) -> Subject:
    """``Trainer.fit`` as train.py configures it (progress bar, logging of conf/; no validation and no checkpoints,
    so no disk writes are timed); one fresh fit of ``n + 1`` steps per run, whose first step ends where the timed
    work starts."""
    module = _classifier(case, compile=case.compile)
    if case.loop == "lightning-minimal":
        module = MinimalModule(module.net, case.channels_last)
    steps = max(case.warmup, case.steps + 1)
    datamodule = cifar(case.data, case.batch, batches=steps + 1)  # one epoch covers the longest fit
    gpu = case.device != "cpu"
    cfg = compose([f"trainer={'gpu' if gpu else 'cpu'}"])
    log_every, refresh = cfg.trainer.log_every_n_steps, cfg.callbacks.progress_bar.refresh_rate
    logs = tempfile.mkdtemp(prefix="resattn-bench-")

    def run(n: int, stamp: Stamp) -> None:
        class StepEnd(Callback):
            def on_train_batch_end(self, *args: Any) -> None:
                stamp()

        L.Trainer(
            accelerator="gpu" if gpu else "cpu",
            devices=1,
            precision=case.precision,
            benchmark=gpu,  # cudnn.benchmark, as conf/trainer/gpu.yaml
            log_every_n_steps=log_every,
            max_steps=n + 1,
            max_epochs=1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            enable_model_summary=False,
            logger=CSVLogger(logs),
            callbacks=[StepEnd(), TQDMProgressBar(refresh_rate=refresh)],
            default_root_dir=logs,
        ).fit(module, datamodule=datamodule)

    return Subject(run)


class MinimalModule(L.LightningModule):
    """Only the loss: what Lightning's loop costs with nothing else in ``training_step``."""

    def __init__(self, net: nn.Module, channels_last: bool) -> None:
        super().__init__()
        self.net, self.channels_last = net, channels_last

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return build_optimizer(self.net, OPTIMIZER)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return nn.functional.cross_entropy(self.net(images), targets)


def _pipeline(case: Case, scratch: Path) -> Subject:
    """The training batches of a data pipeline alone."""
    device = torch.device(case.device)
    if case.data in ("dataloader", "device"):
        datamodule = cifar(case.data, case.batch, case.workers)
    else:
        datamodule = image_format(case.data, scratch, case.batch)
    stream = batches(datamodule, device)

    def run(n: int, stamp: Stamp) -> None:
        stamp()
        for _ in range(n):
            next(stream)
            stamp()

    return Subject(run)


def build(case: Case, scratch: Path) -> Subject:
    """The timed work of a case that runs in this process (``scratch``: a folder for the data it writes)."""
    if case.loop == "data":
        return _pipeline(case, scratch)
    return _lightning(case) if case.loop.startswith("lightning") else _network(case)
