"""What one benchmark case is (:class:`Case`), the one timing loop (:func:`measure`) and the fresh process it runs
in (:func:`run_in_process`; ``python -m benchmarks.worker '<JSON>'`` is the other end).

A case is one thing timed, one step at a time (``loop``):

- ``eval``: ``model.eval()`` forward under ``torch.inference_mode()``;
- ``bare``: forward, cross-entropy, backward, SGD step, ``zero_grad(set_to_none=True)`` in a plain loop;
- ``bare+metrics``: ``bare`` plus what ``ImageClassifier.training_step`` adds (accuracy and loss metric updates,
  the on-device non-finite-loss flag);
- ``lightning-minimal``: ``Trainer.fit`` of a LightningModule whose ``training_step`` returns the loss only;
- ``lightning``: ``Trainer.fit`` of ``ImageClassifier`` as ``train.py`` runs it (progress bar and logging
  intervals of ``conf/``; validation and checkpoints off, so no disk writes are timed);
- ``data``: the next training batch of a data pipeline, without a network;
- ``train.py``: ``python train.py`` of a model and a data config (``arch``, ``data``) for ``steps`` training
  batches, one validation batch and no test, timed from its start to its exit, optionally with ``cpu_threads``
  fixed and beside a busy ``neighbour`` process in a session of its own; one step is the whole command.

Networks read ``data``: one fixed random batch (``fixed``) or CIFAR-10's datamodule (``dataloader``,
``device``; see :mod:`benchmarks.pipelines`). Precisions are the trainer's (``32-true``, ``bf16-mixed``,
``16-mixed``: autocast around forward and loss, a gradient scaler for 16-bit), memory format and compilation the
module's options (``channels_last``, ``compile``). Every network trains with one optimiser, the paper's SGD.

The timing loop: every case runs ``warmup`` untimed steps (torch.compile compiles there), then ``repeats``
rounds in which each case in turn runs ``steps`` timed steps, in alternating order (A B, B A, ...) so that a
change in the machine's load hits every case alike; each round gives one img/s figure. Steps are stamped at
their end (on a GPU the device is synchronised at the round's first and last stamp only). The process records
the share of the machine's CPU that other processes used meanwhile and, when it holds a single case, the
peak memory: the resident set size's high-water mark on a CPU (``VmHWM``, reset before the warm-up), the
CUDA allocator's peak on a GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from torch import nn

from benchmarks.pipelines import batches, cifar, image_format
from lightning_modules import ImageClassifier
from lightning_modules.optim import build_optimizer
from resattn import get_variant
from resattn.summary import count_gmacs

ROOT = Path(__file__).resolve().parents[1]
LOOPS = ("eval", "bare", "bare+metrics", "lightning-minimal", "lightning", "data", "train.py")
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}  # the trainer's names
NETWORK_DATA = ("fixed", "dataloader", "device")
PIPELINES = ("dataloader", "device", "folder", "hf", "streaming", "gpu-decode")
LIBRARIES = ("resattn", "pytorchcv")
PROBE = "linear-probe"  # one linear layer: its ~1 ms steps make the loops' own per-step costs visible
# the paper's SGD (docs/paper.md §5.1); build_optimizer uses the fused implementation on CUDA
OPTIMIZER = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "fused": True}
Stamp = Callable[[], None]
# The train.py loop's command: a short training, its data defaults made explicit, logs elsewhere, no resuming.
TRAIN_PY = (
    "model={arch} data={data} data.batch_size={batch} data.num_workers={workers} trainer.max_epochs=1 "
    "trainer.limit_train_batches={steps} trainer.limit_val_batches=1 trainer.limit_test_batches=1 logger=csv "
    "test=false auto_resume=false"
)
# The busy neighbour: pure Python, one core; it ends when its parent (argv[1]) is gone, even if that one was killed.
NEIGHBOUR = "import os, sys\nwhile os.getppid() == int(sys.argv[1]):\n    for _ in range(1_000_000):\n        pass\n"


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
                names = sorted(path.stem for path in (ROOT / "conf" / group).glob("*.yaml"))
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
    """``Trainer.fit`` as train.py configures it; one fresh fit of ``n + 1`` steps per run, whose first step
    ends where the timed work starts."""
    module = _classifier(case, compile=case.compile)
    if case.loop == "lightning-minimal":
        module = MinimalModule(module.net, case.channels_last)
    steps = max(case.warmup, case.steps + 1)
    datamodule = cifar(case.data, case.batch, batches=steps + 1)  # one epoch covers the longest fit
    gpu = case.device != "cpu"
    log_every = OmegaConf.load(ROOT / "conf" / "trainer" / ("gpu.yaml" if gpu else "cpu.yaml")).log_every_n_steps
    refresh = OmegaConf.load(ROOT / "conf" / "callbacks" / "default.yaml").progress_bar.refresh_rate
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


class Contention:
    """Share of the machine's CPU time used by *other* processes since it was made (Linux ``/proc/stat``):
    ``(busy time of all CPUs - this process's CPU time) / (wall time x cores)``, 0 on a quiet machine, 0.5 when
    other work kept one of two cores busy; ``None`` where /proc is missing. With ``children`` the CPU time of the
    child processes that have ended and been waited for (with theirs) counts as this process's."""

    def __init__(self, children: bool = False) -> None:
        self.children = children
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except OSError:
            return None
        own = os.times()
        busy = (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
        children = own.children_user + own.children_system if self.children else 0.0
        return busy, own.user + own.system + children, time.perf_counter()

    def others(self) -> float | None:
        end = self._sample()
        if self.start is None or end is None:
            return None
        busy, own, wall = (e - s for e, s in zip(end, self.start, strict=True))
        return max(0.0, (busy - own) / (wall * (os.cpu_count() or 1)))


def _script(case: Case) -> Subject:
    """``python train.py`` for ``n`` training batches, start to exit, its logs in a temporary folder, beside a busy
    process in a session of its own (another scheduling group under sched_autogroup) for a ``neighbour`` case;
    the other processes' CPU share leaves out train.py, its DataLoader workers and the neighbour."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # it would fix train.py's threads
    shares: list[float] = []  # other processes' CPU share during each timed run

    def run(n: int, stamp: Stamp) -> None:
        if n == 0:
            return
        meter = Contention(children=True)
        with tempfile.TemporaryDirectory(prefix="resattn-bench-") as logs:
            overrides = TRAIN_PY.format(**{**dataclasses.asdict(case), "steps": n}).split()
            command = [sys.executable, "train.py", *overrides, f"paths.log_dir={logs}"]
            command += [f"cpu_threads={case.cpu_threads}"] if case.cpu_threads else []
            busy = [sys.executable, "-c", NEIGHBOUR, str(os.getpid())]
            neighbour = subprocess.Popen(busy, start_new_session=True) if case.neighbour else None
            try:
                stamp()
                proc = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                stamp()
            finally:
                if neighbour is not None:
                    neighbour.kill()
                    neighbour.wait()
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
            raise RuntimeError(f"train.py exited with {proc.returncode}: {lines[-1]}")
        if (share := meter.others()) is not None:
            shares.append(share)

    return Subject(run, others=lambda: shares)


def _peak_memory(device: torch.device, reset: bool = False) -> float:
    """The peak memory (MiB) since the last reset: CUDA max allocated, or the CPU's resident set high-water mark."""
    if device.type == "cuda":
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    if reset:  # writing 5 resets VmHWM to the current RSS
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def measure(cases: Sequence[Case]) -> list[dict[str, Any]]:
    """Build every case, warm each up, then time their interleaved rounds (see the module docstring); one result
    row per case."""
    torch.manual_seed(0)
    device = torch.device(cases[0].device)
    _peak_memory(device, reset=True)
    scratch = Path(tempfile.mkdtemp(prefix="resattn-bench-"))
    subjects = []
    for i, case in enumerate(cases):
        if case.loop == "data":
            subjects.append(_pipeline(case, scratch / str(i)))
        elif case.loop == "train.py":
            subjects.append(_script(case))
        else:
            subjects.append(_lightning(case) if case.loop.startswith("lightning") else _network(case))
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    warmup_s = []
    for case, subject in zip(cases, subjects, strict=True):
        start = time.perf_counter()
        subject.run(case.warmup, lambda: None)
        sync()
        warmup_s.append(time.perf_counter() - start)
    rates: list[list[float]] = [[] for _ in cases]
    others = Contention()
    for repeat in range(max(case.repeats for case in cases)):
        order = list(enumerate(zip(cases, subjects, strict=True)))
        for i, (case, subject) in order if repeat % 2 == 0 else order[::-1]:
            if repeat < case.repeats:
                stamps: list[float] = []

                def stamp(stamps: list[float] = stamps, last: int = case.steps + 1) -> None:
                    if len(stamps) in (0, last - 1):  # the round's first and last stamp
                        sync()
                    stamps.append(time.perf_counter())

                subject.run(case.steps, stamp)
                rates[i].append(case.steps * case.batch / (stamps[-1] - stamps[0]))
    share = others.others()
    peak = _peak_memory(device) if len(cases) == 1 and cases[0].loop != "train.py" else None  # not train.py's
    return [
        {
            "threads": torch.get_num_threads(),
            "img_s": rate,
            "peak_mib": peak,
            "warmup_s": warm,
            "others_cpu": subject.others() if subject.others else share,
            "params_m": subject.params_m,
            "gmacs": subject.gmacs,
            "pid": os.getpid(),
        }
        for rate, warm, subject in zip(rates, warmup_s, subjects, strict=True)
    ]


def run_in_process(cases: Sequence[Case], threads: int = 0, timeout: float | None = None) -> list[dict[str, Any]]:
    """:func:`measure` in a fresh Python process with ``threads`` torch threads (0: torch's default), so that no
    allocator state or compile cache carries over and the peak memory is the cases' own. A failure of the
    process (an exception, a timeout) comes back as an ``error`` in every case's row."""
    payload = json.dumps({"threads": threads, "cases": [dataclasses.asdict(case) for case in cases]})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "benchmarks.worker", payload]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [{"error": f"timeout after {timeout:.0f} s"} for _ in cases]
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines and lines[-1].startswith("["):
        return json.loads(lines[-1])
    error = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}, no output"])[-1][:300]
    return [{"error": error} for _ in cases]


def main(argv: Sequence[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        raise SystemExit('usage: python -m benchmarks.worker \'{"threads": N, "cases": [<Case fields>, ...]}\'')
    payload = json.loads(args[0])
    if payload["threads"]:
        torch.set_num_threads(payload["threads"])
    with contextlib.suppress(ImportError):  # both libraries in every process, so that their peak memory starts alike
        import pytorchcv.model_provider  # noqa: F401
    warnings.simplefilter("ignore")  # DataLoader's worker count, litdata's and torchvision's notes
    print(json.dumps(measure([Case(**raw) for raw in payload["cases"]])))


if __name__ == "__main__":
    main()
