"""The parent side of a benchmark run: every measurement in a fresh process, with its thread count chosen just
before it, and again when other processes disturbed it.

Measurements run after untimed warm-up steps, for several timed repeats; the cases a ratio compares share a
process and alternate their repeats, and peak memory is measured with one case per process. Before each
measurement the idle cores are counted and become its torch threads (``--threads auto``), and other processes'
share of the CPU is measured during every timed phase; a measurement disturbed by more than
``--max-contention`` is run again (``--retries``) and the least disturbed one kept.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from benchmarks.loops import LoopCase, LoopResult, run_loop_cases
from benchmarks.measure import Case, Result, run_cases
from benchmarks.report import fmt_pct
from benchmarks.worker import Contention

if TYPE_CHECKING:
    from benchmarks.settings import Settings

LOOP_WARMUP = 3  # untimed steps of every training loop before its timed rounds
T = TypeVar("T", Result, list[Result], list[LoopResult])


class Runner:
    """Runs cases once each (results are shared between sections) and re-runs disturbed ones."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timing: dict[Case, Result] = {}  # throughput of every case, measured alone or in a group
        self.alone: dict[Case, Result] = {}  # cases measured alone in a process (throughput and peak memory)
        self.loop_results: dict[tuple[LoopCase, ...], list[LoopResult]] = {}

    def threads(self) -> int:
        """Threads for the next measurement: ``--threads``, or (``auto``, on a CPU) the cores that other
        processes leave idle right now (sampled for one second), at least one."""
        if self.settings.threads or self.settings.device != "cpu":
            return self.settings.threads
        cores = os.cpu_count() or 1
        meter = Contention()
        time.sleep(1.0)
        return max(1, cores - round((meter.others() or 0.0) * cores))

    def _retry(self, run: Callable[[int], T], contention: Callable[[T], float | None], label: str) -> T:
        """``run(threads)`` until other processes' CPU share stays within ``--max-contention`` (at most
        ``--retries`` more times); the least disturbed result."""
        best: Any = None
        best_contention = float("inf")
        for attempt in range(self.settings.retries + 1):
            threads = self.threads()
            start = time.perf_counter()
            result = run(threads)
            measured = contention(result)
            # others may use the cores this run leaves free; only the excess disturbs the measurement
            spare = 1 - (threads or torch.get_num_threads()) / (os.cpu_count() or 1)
            value = 0.0 if measured is None else max(0.0, measured - spare)
            error = next((r.error for r in result if r.error), None) if isinstance(result, list) else result.error
            note = f"error: {error}" if error else f"{threads or 'default'} threads, others' CPU {fmt_pct(measured)}"
            print(f"  {label}: {time.perf_counter() - start:.0f} s, {note}", flush=True)
            if best is None or value < best_contention:
                best, best_contention = result, value
            if error or value <= self.settings.max_contention:
                break
            if attempt < self.settings.retries:
                print(f"  {label}: other processes used the CPU; measuring again", flush=True)
        return best

    def together(self, cases: Sequence[Case]) -> list[Result]:
        """Throughput of ``cases`` measured in one process with interleaved repeats (robust ratios)."""
        todo = [case for case in cases if case not in self.timing]
        if todo:
            label = ", ".join(f"{c.library} {c.model} {c.size}px b{c.batch} {c.config}" for c in todo)
            results = self._retry(
                lambda threads: run_cases(todo, self.settings.timeout, threads),
                lambda rs: max((p.contention or 0.0 for r in rs for p in r.phases.values()), default=None),
                label if len(todo) < 3 else f"{len(todo)} cases interleaved ({label[:60]}...)",
            )
            self.timing.update(zip(todo, results, strict=True))
            if len(todo) == 1:
                self.alone[todo[0]] = results[0]
        return [self.timing[case] for case in cases]

    def full(self, case: Case) -> Result:
        """Throughput (measured alone, or earlier in a group) and peak memory (measured alone) of ``case``."""
        result = self.together([case])[0]
        if case in self.alone or result.error:
            return result
        probe = replace(case, warmup=1, repeats=1)  # peak memory: a fresh process and two steps per phase
        if probe not in self.alone:
            self.alone[probe] = self._retry(
                lambda threads: run_cases([probe], self.settings.timeout, threads)[0],
                lambda r: 0.0,  # memory does not depend on the load
                f"peak memory of {case.library} {case.model} {case.size}px b{case.batch} {case.config}",
            )
        memory = self.alone[probe]
        phases = {
            name: replace(phase, peak_mem_mib=memory.phases[name].peak_mem_mib if name in memory.phases else None)
            for name, phase in result.phases.items()
        }
        return replace(result, phases=phases)

    def loops(self, cases: Sequence[LoopCase]) -> list[LoopResult]:
        """``cases`` interleaved in one process (see :mod:`benchmarks.loops`); always measured together, so
        that the ratios a section reports come from one process."""
        key = tuple(cases)
        if key not in self.loop_results:
            self.loop_results[key] = self._retry(
                lambda threads: run_loop_cases(cases, self.settings.timeout, threads),
                lambda rs: max((r.contention or 0.0 for r in rs), default=None),
                f"{len(cases)} training loops interleaved ({', '.join(sorted({c.loop for c in cases}))})",
            )
        return self.loop_results[key]

    def model_case(self, library: str, model: str, size: int, config: Sequence[str]) -> Case:
        """The case of ``model`` at ``size``: ImageNet-size batch and steps from 128 px up, CIFAR-size below."""
        s = self.settings
        large = size >= 128
        return Case(
            library,
            model,
            size,
            s.batch if large else s.small_batch,
            *config,
            device=s.device,
            num_classes=10 if _family(library, model) == "cifar" else 1000,
            warmup=s.warmup,
            repeats=s.repeats,
            steps=s.steps if large else max(s.steps, 3),
        )

    def loop_case(self, loop: str, **fields: Any) -> LoopCase:
        """A training loop on ``--loop-arch`` at ``--small-batch`` for ``--repeats`` rounds of ``--loop-steps``
        steps, unless ``fields`` say otherwise."""
        s = self.settings
        defaults = {"arch": s.loop_arch, "batch": s.small_batch, "steps": s.loop_steps, "warmup": LOOP_WARMUP}
        return LoopCase(loop, **{**defaults, "device": s.device, "repeats": s.repeats, **fields})


def _family(library: str, model: str) -> str:
    if library == "pytorchcv":
        return "imagenet"
    from resattn import get_variant

    return get_variant(model).family
