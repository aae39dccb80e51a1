"""Throughput and peak-memory measurements of networks (:class:`Case`), each batch of cases in a fresh process.

A case is a network (resattn through timm, or pytorchcv), an input size and batch, a precision
(``fp32`` / ``bf16-mixed``), a memory format (``nchw`` / ``channels_last``) and a mode (``eager`` /
``compile``). :func:`measure` builds the networks, then times

- ``eval``: ``model.eval()`` forward passes under ``torch.inference_mode()``;
- ``train``: forward, cross-entropy, backward, SGD step (the paper's: Nesterov, momentum 0.9, weight decay 1e-4;
  fused on CUDA), ``zero_grad(set_to_none=True)``,

each with ``warmup`` untimed steps (compilation and allocator warm-up happen there) and ``repeats`` timed
repeats of ``steps`` steps; every repeat gives one img/s figure, reported as median and range. No host sync
happens inside a repeat (CUDA is synchronised at repeat boundaries only). Cases measured together have their
repeats interleaved, so that their ratios survive changes in the machine's load. Peak memory is measured with
one case per process: the peak resident set size during the phase on CPU (Linux ``VmHWM``, reset before each
phase through ``/proc/self/clear_refs``), ``torch.cuda.max_memory_allocated`` on a GPU.

``python -m benchmarks.measure '<list of cases as JSON>'`` prints the results as one JSON line (used by
:func:`run_cases`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from benchmarks.worker import Contention, RepeatStats, run_worker, set_threads, worker_main

LIBRARIES = ("resattn", "pytorchcv")
PRECISIONS = ("fp32", "bf16-mixed")
MEMORY_FORMATS = ("nchw", "channels_last")
MODES = ("eager", "compile")
PHASES = ("eval", "train")


@dataclass(frozen=True)
class Case:
    """What to measure: one network in one configuration, on one device."""

    library: str
    model: str
    size: int
    batch: int
    precision: str = "fp32"
    memory_format: str = "nchw"
    mode: str = "eager"
    device: str = "cpu"
    num_classes: int = 1000
    threads: int = 0  # torch intra-op threads; 0: $RESATTN_BENCH_THREADS if set, else torch's default
    warmup: int = 1
    repeats: int = 3
    steps: int = 1
    phases: tuple[str, ...] = PHASES

    def __post_init__(self) -> None:
        for name, value, accepted in (
            ("library", self.library, LIBRARIES),
            ("precision", self.precision, PRECISIONS),
            ("memory_format", self.memory_format, MEMORY_FORMATS),
            ("mode", self.mode, MODES),
        ):
            if value not in accepted:
                raise ValueError(f"unknown {name} {value!r}; accepted: {list(accepted)}")
        if unknown := set(self.phases) - set(PHASES):
            raise ValueError(f"unknown phases {sorted(unknown)}; accepted: {list(PHASES)}")
        object.__setattr__(self, "phases", tuple(self.phases))

    @property
    def config(self) -> str:
        """``fp32/nchw/eager`` style label of the configuration."""
        return f"{self.precision}/{self.memory_format}/{self.mode}"


@dataclass
class PhaseResult(RepeatStats):
    """Throughput of every timed repeat (img/s) and the phase's peak memory (MiB)."""

    img_per_s: list[float]
    peak_mem_mib: float | None  # None when several cases shared the process
    warmup_s: float
    contention: float | None = None  # share of the machine's CPU used by other processes meanwhile


@dataclass
class Result:
    """A measured :class:`Case`: size of the network and one :class:`PhaseResult` per phase."""

    case: Case
    params_m: float
    gmacs: float | None
    phases: dict[str, PhaseResult] = field(default_factory=dict)
    threads: int = 0  # torch intra-op threads it ran with
    load_before: float = 0.0  # 1-minute load average when the measurement started
    load_after: float = 0.0  # ... and when it ended: above the core count means other work competed
    error: str | None = None

    @classmethod
    def from_dict(cls, raw: dict) -> Result:
        raw = dict(raw)
        raw["case"] = Case(**raw["case"])
        raw["phases"] = {k: PhaseResult(**v) for k, v in raw["phases"].items()}
        return cls(**raw)

    @classmethod
    def failed(cls, case: Case, error: str) -> Result:
        return cls(case=case, params_m=0.0, gmacs=None, error=error)


def import_libraries() -> None:
    """Import timm, resattn and (when installed) pytorchcv, so that every process starts from the same resident
    set whichever library it measures (peak RSS is then comparable between libraries)."""
    import timm  # noqa: F401

    import resattn  # noqa: F401  (registers the models with timm)

    with contextlib.suppress(ImportError):
        import pytorchcv.model_provider  # noqa: F401


def build_model(library: str, model: str, num_classes: int = 1000) -> nn.Module:
    """The network as each library's users build it: ``timm.create_model`` or ``pytorchcv.model_provider``."""
    import_libraries()
    if library == "resattn":
        import timm

        return timm.create_model(model, num_classes=num_classes)
    try:
        from pytorchcv.model_provider import get_model
    except ImportError as err:
        raise ImportError("pytorchcv is not installed: pip install -e '.[bench]' (or pip install pytorchcv)") from err
    return get_model(model, num_classes=num_classes)


def count_gmacs(model: nn.Module, size: int) -> float | None:
    """Forward MACs (G) of one image (convolutions and matrix products; ``None`` if the network refuses it)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    except RuntimeError:
        return None
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 2e9


class PeakMemory:
    """Peak memory of a phase: CPU resident set size (Linux VmHWM) or CUDA max allocated, in MiB."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        # Writing 5 resets VmHWM to the current RSS; without it the peak covers the process so far (an upper bound).
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return kib / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The paper's SGD (docs/paper.md §5.1); fused on CUDA, the default (foreach) implementation elsewhere."""
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4, **fused)


def step_functions(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, precision: str
) -> dict[str, Callable[[], None]]:
    """One eval step and one train step on a fixed batch, as closures."""
    device = images.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    criterion = nn.CrossEntropyLoss()
    optimizer = make_optimizer(model, device)

    def eval_step() -> None:
        with torch.inference_mode(), autocast:
            model(images)

    def train_step() -> None:
        with autocast:
            loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {"eval": eval_step, "train": train_step}


def _prepare(case: Case) -> tuple[Result, dict[str, Callable[[], None]], nn.Module]:
    """Build the case's network, inputs and step closures; the result holds its size and GMACs."""
    device = torch.device(case.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = build_model(case.library, case.model, case.num_classes).to(device)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    gmacs = count_gmacs(model, case.size)
    images = torch.randn(case.batch, 3, case.size, case.size, device=device)
    labels = torch.randint(0, case.num_classes, (case.batch,), device=device)
    if case.memory_format == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    if case.mode == "compile":
        model.compile()
    result = Result(case=case, params_m=params_m, gmacs=gmacs, load_before=os.getloadavg()[0])
    return result, step_functions(model, images, labels, case.precision), model


def measure(cases: Sequence[Case]) -> list[Result]:
    """Build every case's network in this process and time their phases (see the module docstring).

    With several cases the timed repeats are interleaved (A B, B A, A B...), so that a change in the machine's
    load hits all of them alike and their ratios stay meaningful; their peak memory is then not separable
    and is left out (``None``): measure it with one case per process.
    """
    set_threads(cases[0].threads)
    prepared = [_prepare(case) for case in cases]
    device = torch.device(cases[0].device)
    memory = PeakMemory(device)
    alone = len(prepared) == 1
    for phase in PHASES:
        subjects = [(r, steps[phase], model) for r, steps, model in prepared if phase in r.case.phases]
        if not subjects:
            continue
        warmups = []
        memory.reset()
        for result, step, model in subjects:
            model.train(phase == "train")
            start = time.perf_counter()
            for _ in range(result.case.warmup):
                step()
            _sync(device)
            warmups.append(time.perf_counter() - start)
        rates: list[list[float]] = [[] for _ in subjects]
        contention = Contention()
        for repeat in range(max(r.case.repeats for r, _, _ in subjects)):
            order = list(enumerate(subjects))
            for i, (result, step, model) in order if repeat % 2 == 0 else order[::-1]:
                if repeat >= result.case.repeats:
                    continue
                model.train(phase == "train")
                start = time.perf_counter()
                for _ in range(result.case.steps):
                    step()
                _sync(device)
                rates[i].append(result.case.steps * result.case.batch / (time.perf_counter() - start))
        others = contention.others()
        peak = memory.peak_mib() if alone else None
        for (result, _, _), warmup_s, case_rates in zip(subjects, warmups, rates, strict=True):
            result.phases[phase] = PhaseResult(case_rates, peak, warmup_s, others)
    for result, _, _ in prepared:
        result.load_after = os.getloadavg()[0]
        result.threads = torch.get_num_threads()
    return [result for result, _, _ in prepared]


def run_cases(cases: Sequence[Case], timeout: float | None = None, threads: int = 0) -> list[Result]:
    """:func:`measure` in a fresh Python process (own peak memory, no allocator or compile-cache carry-over).

    A failure (e.g. pytorchcv's fixed 7x7 pooling at small inputs, or a compile error) comes back as
    results with ``error`` set and no phases.
    """
    return run_worker("benchmarks.measure", cases, Result.from_dict, Result.failed, timeout, threads)


def main(argv: list[str] | None = None) -> None:
    worker_main("benchmarks.measure", argv, Case, measure, Result.failed)


if __name__ == "__main__":
    main()
