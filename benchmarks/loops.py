"""Training loops compared on the same network, optimiser, data and batch: Lightning against bare PyTorch, and
the Lightning training path with each fast option.

Each :class:`LoopCase` trains an ``ImageClassifier`` network with CIFAR-10's datamodule and recipe (mean image,
zero-pad 4 random crop, flip) over random in-memory 32x32 images. ``arch=PROBE`` swaps the network for one
linear layer, whose ~1 ms steps make the loops' own per-step costs visible. The loops, from least to most work
per step:

- ``bare``: ``for images, labels in loader``: forward, cross-entropy, backward, SGD step, zero_grad;
- ``bare+metrics``: ``bare`` plus what ``ImageClassifier.training_step`` adds (top-1/top-5 accuracy and loss
  metric updates, the on-device non-finite loss flag);
- ``lightning-minimal``: ``Trainer.fit`` of a LightningModule whose ``training_step`` only returns the loss
  (the framework's own overhead);
- ``lightning``: ``Trainer.fit`` of ``ImageClassifier`` as ``train.py`` runs it (progress bar with the refresh
  rate of ``conf/callbacks/default.yaml``, CSV logger, ``log_every_n_steps`` of ``conf/trainer/cpu.yaml``;
  checkpointing and validation off, so no disk writes are timed).

``data="dataloader"`` feeds the datamodule's DataLoader (``num_workers=0``: the data are in memory),
``data="device"`` the GPU-resident :class:`~datamodules.gpu_resident.DeviceBatchLoader`.

Cases measured together share one process and are interleaved: every case first runs ``warmup`` steps, then
``repeats`` rounds in which each case in turn runs ``steps + 1`` steps (a Lightning case with a fresh
``Trainer.fit``). Steps are timed at their end (after ``optimizer.step()`` and ``zero_grad``), so data loading
between steps counts; the first step of a round only starts the clock. A round gives one img/s figure per case,
and load changes during the run hit every case alike.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.worker import ROOT, Contention, RepeatStats, run_worker, set_threads, worker_main

LOOPS = ("bare", "bare+metrics", "lightning-minimal", "lightning")
DATA_PATHS = ("dataloader", "device")
PRECISIONS = ("32-true", "bf16-mixed")  # Lightning's names
PROBE = "linear-probe"  # a one-layer network: its steps take ~1 ms, so the loops' own costs stand out
# the paper's SGD; build_optimizer uses the fused implementation on CUDA only
OPTIMIZER = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "fused": True}


@dataclass(frozen=True)
class LoopCase:
    """One training loop on one network and batch."""

    loop: str
    arch: str = "resattn56_cifar"  # a timm name, or PROBE
    batch: int = 64
    data: str = "dataloader"
    precision: str = "32-true"
    channels_last: bool = False
    compile: bool = False
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0: $RESATTN_BENCH_THREADS if set, else torch's default
    warmup: int = 3
    repeats: int = 3
    steps: int = 5

    def __post_init__(self) -> None:
        if self.loop not in LOOPS:
            raise ValueError(f"unknown loop {self.loop!r}; accepted: {list(LOOPS)}")
        if self.data not in DATA_PATHS:
            raise ValueError(f"unknown data path {self.data!r}; accepted: {list(DATA_PATHS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; accepted: {list(PRECISIONS)}")


@dataclass
class LoopResult(RepeatStats):
    """img/s of every timed round, the median step time and how busy the machine was meanwhile."""

    case: LoopCase
    img_per_s: list[float] = field(default_factory=list)
    step_ms: float = 0.0  # batch / median img/s
    warmup_s: float = 0.0
    contention: float | None = None  # share of the machine's CPU used by other processes in the timed rounds
    threads: int = 0  # torch intra-op threads it ran with
    load_before: float = 0.0
    load_after: float = 0.0
    error: str | None = None

    @classmethod
    def from_dict(cls, raw: dict) -> LoopResult:
        return cls(**{**raw, "case": LoopCase(**raw["case"])})

    @classmethod
    def failed(cls, case: LoopCase, error: str) -> LoopResult:
        return cls(case=case, error=error)


def _datamodule(case: LoopCase) -> Any:
    """CIFAR-10's datamodule and recipe (mean image, pad-crop, flip) over random in-memory images."""
    from benchmarks.data import InMemoryCIFAR10

    batches = max(case.warmup, case.steps + 1) + 1  # one epoch covers the longest run
    datamodule = InMemoryCIFAR10(
        root="",
        num_classes=10,
        batch_size=case.batch,
        num_workers=0,
        val_fraction=0.0,
        gpu_resident=case.data == "device",
    )
    datamodule.num_images = case.batch * batches
    return datamodule


def _classifier(case: LoopCase) -> Any:
    """``ImageClassifier`` of the case's ``arch``; the probe swaps in a one-layer network."""
    from lightning_modules import ImageClassifier

    module = ImageClassifier(
        arch="resattn_tiny_cifar" if case.arch == PROBE else case.arch,
        num_classes=10,
        optimizer=OPTIMIZER,
        scheduler={"name": "none"},
        channels_last=case.channels_last,
        compile=case.compile,
    )
    if case.arch == PROBE:
        module.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    return module


class BareLoop:
    """The plain PyTorch loop (``bare``, ``bare+metrics``) over the datamodule's train loader."""

    def __init__(self, case: LoopCase) -> None:
        from lightning_modules.optim import build_optimizer

        self.case = case
        self.device = torch.device(case.device)
        self.module = _classifier(case).to(self.device)
        datamodule = _datamodule(case)
        datamodule.setup("fit")
        self.loader = datamodule.train_dataloader()
        if case.data == "device":  # what the Trainer's device does in the datamodule
            self.loader.images, self.loader.labels = (
                self.loader.images.to(self.device),
                self.loader.labels.to(self.device),
            )
        self.optimizer = build_optimizer(self.module.net, OPTIMIZER)
        self.batches: Iterator = iter(())

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def run(self, steps: int, stamp: Callable[[], None]) -> None:
        case, net, criterion = self.case, self.module.net, self.module.criterion
        metrics, losses = self.module.metrics["train_acc"], self.module.losses["train_loss"]
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=case.precision == "bf16-mixed")
        net.train()
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        for _ in range(steps):
            images, targets = (t.to(self.device, non_blocking=True) for t in self._next_batch())
            if case.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = net(images)
                loss = criterion(logits, targets)
            if case.loop == "bare+metrics":
                metrics.update(logits, targets)
                losses.update(loss.detach(), weight=targets.numel())
                nonfinite |= ~torch.isfinite(loss.detach())
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            stamp()
        if nonfinite:
            raise RuntimeError("non-finite loss")


class LightningLoop:
    """``Trainer.fit`` as train.py configures it (validation and checkpoints off), one fit per run."""

    def __init__(self, case: LoopCase) -> None:
        from omegaconf import OmegaConf

        from benchmarks.minimal import MinimalModule

        self.case = case
        if case.loop == "lightning-minimal":
            self.module: Any = MinimalModule(_classifier(case).net, OPTIMIZER, case.channels_last)
        else:
            self.module = _classifier(case)
        self.datamodule = _datamodule(case)
        self.log_every_n_steps = OmegaConf.load(ROOT / "conf" / "trainer" / "cpu.yaml").log_every_n_steps
        self.refresh_rate = OmegaConf.load(ROOT / "conf" / "callbacks" / "default.yaml").progress_bar.refresh_rate
        self.logs = tempfile.TemporaryDirectory()

    def run(self, steps: int, stamp: Callable[[], None]) -> None:
        import lightning as L
        from lightning.pytorch.callbacks import Callback, TQDMProgressBar
        from lightning.pytorch.loggers import CSVLogger

        class StepEnd(Callback):
            def on_train_batch_end(self, *args: Any) -> None:
                stamp()

        gpu = self.case.device == "cuda"
        trainer = L.Trainer(
            accelerator="gpu" if gpu else "cpu",
            devices=1,
            precision=self.case.precision,
            benchmark=gpu,  # cudnn.benchmark, as conf/trainer/gpu.yaml
            log_every_n_steps=self.log_every_n_steps,
            max_steps=steps,
            max_epochs=1,  # the data hold one epoch of enough batches; also sizes the schedulers
            limit_val_batches=0,
            num_sanity_val_steps=0,
            enable_checkpointing=False,
            enable_model_summary=False,
            logger=CSVLogger(self.logs.name),
            callbacks=[StepEnd(), TQDMProgressBar(refresh_rate=self.refresh_rate)],
            default_root_dir=self.logs.name,
        )
        trainer.fit(self.module, datamodule=self.datamodule)


class RoundClock:
    """Called at the end of every step of a round; keeps the first and the last step's end times. On a GPU it
    synchronises the device at those two steps only, so the steps in between run as they would in training."""

    def __init__(self, stamps: list[float], case: LoopCase) -> None:
        self.stamps, self.last, self.step = stamps, case.steps + 1, 0
        self.sync = torch.cuda.synchronize if case.device == "cuda" else None

    def __call__(self) -> None:
        self.step += 1
        if self.step in (1, self.last):
            if self.sync is not None:
                self.sync()
            self.stamps.append(time.perf_counter())


def measure_loops(cases: Sequence[LoopCase]) -> list[LoopResult]:
    """Warm every case up, then interleave ``repeats`` timed rounds of all cases (see the module docstring)."""
    torch.manual_seed(0)
    set_threads(cases[0].threads)
    results = [LoopResult(case=case, load_before=os.getloadavg()[0]) for case in cases]
    loops = [BareLoop(case) if case.loop.startswith("bare") else LightningLoop(case) for case in cases]
    for loop, result in zip(loops, results, strict=True):
        start = time.perf_counter()
        loop.run(loop.case.warmup, lambda: None)
        result.warmup_s = time.perf_counter() - start
    contention = Contention()
    for repeat in range(max(case.repeats for case in cases)):
        order = list(enumerate(loops))
        for i, loop in order if repeat % 2 == 0 else order[::-1]:
            if repeat >= loop.case.repeats:
                continue
            stamps: list[float] = []
            loop.run(loop.case.steps + 1, RoundClock(stamps, loop.case))
            results[i].img_per_s.append(loop.case.steps * loop.case.batch / (stamps[-1] - stamps[0]))
    others = contention.others()
    for result in results:
        result.step_ms = 1e3 * result.case.batch / statistics.median(result.img_per_s)
        result.contention = others
        result.threads = torch.get_num_threads()
        result.load_after = os.getloadavg()[0]
    return results


def run_loop_cases(cases: Sequence[LoopCase], timeout: float | None = None, threads: int = 0) -> list[LoopResult]:
    """:func:`measure_loops` in a fresh process; a failure comes back as results with ``error`` set."""
    return run_worker("benchmarks.loops", cases, LoopResult.from_dict, LoopResult.failed, timeout, threads)


def main(argv: list[str] | None = None) -> None:
    worker_main("benchmarks.loops", argv, LoopCase, measure_loops, LoopResult.failed)


if __name__ == "__main__":
    main()
