"""``loops``: the Lightning training loop against a bare PyTorch loop (same network, data and batch), and on a
one-layer probe network whose short steps show where the per-step time of each layer of the stack goes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from benchmarks.loops import PROBE, LoopResult
from benchmarks.report import fmt_pct, fmt_rate, loop_result_from_row, loop_row, markdown_table
from benchmarks.runner import LOOP_WARMUP, Runner
from benchmarks.sections.base import Goal, Section, SectionResult, verdict
from benchmarks.settings import Settings

LIGHTNING_OVERHEAD_GOAL = 0.05  # Lightning's step time over the bare loop's, as train.py runs it
PROBE_WARMUP = 10
LOOP_ROWS = (  # loop, data path, row label
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
HEADER = ["loop", "data", "train img/s", "ms/step", "ms/step vs bare", "overhead vs bare", "error"]
NOTE = (
    "Every loop trains on CIFAR-10's datamodule and recipe (mean image, zero-pad 4 random crop, flip) over random "
    "in-memory 32x32 images (`num_workers=0`), timed at the end of each optimiser step, so data loading counts. "
    "Overhead = median step time / the bare loop's median step time on the same data path - 1."
)


def measure(runner: Runner) -> LoopsResult:
    s = runner.settings
    network = runner.loop_case("bare")
    tables = [(network, LOOP_ROWS)]
    if s.probe_steps:
        tables.append((replace(network, arch=PROBE, warmup=PROBE_WARMUP, steps=s.probe_steps), PROBE_ROWS))
    cases = [
        replace(template, loop=loop, data=data)
        for template, rows in tables
        for loop, data, _ in rows
        if loop in s.loops
    ]
    return LoopsResult.measured([loop_row(result) for result in runner.loops(cases)])  # all in one process


def _overhead(result: LoopResult, bare: dict[str, float]) -> tuple[float | None, float | None]:
    """Extra ms per step over the bare loop on the same data path, and that as a share of the bare step."""
    data = result.case.data
    if result.error or data not in bare:
        return None, None
    extra = result.step_ms - bare[data]
    return extra, extra / bare[data]


@dataclass
class LoopsResult(SectionResult):
    """Rows: the network's loops, then the probe's (each in the order of its ``*_ROWS``)."""

    tables: dict[str, list[LoopResult]] = field(init=False, repr=False)  # by network

    def __post_init__(self) -> None:
        self.tables = {}
        for row in self.rows:
            result = loop_result_from_row(row)
            self.tables.setdefault(result.case.arch, []).append(result)

    @staticmethod
    def _bare(results: list[LoopResult]) -> dict[str, float]:
        return {r.case.data: r.step_ms for r in results if r.case.loop == "bare"}

    def markdown(self, settings: Settings) -> str:
        parts = []
        for arch, results in self.tables.items():
            probe = arch == PROBE
            labels = {(loop, data): label for loop, data, label in (PROBE_ROWS if probe else LOOP_ROWS)}
            bare = self._bare(results)
            rows = []
            for result in results:
                extra, overhead = _overhead(result, bare)
                rows.append(
                    [
                        labels[result.case.loop, result.case.data],
                        result.case.data,
                        fmt_rate(result.img_per_s),
                        f"{result.step_ms:.2f}",
                        "–" if extra is None else f"{extra:+.2f}",
                        fmt_pct(overhead),
                        result.error or "",
                    ]
                )
            network = (
                "a one-layer probe network (Flatten + Linear), whose steps are so short that the loops' own per-step "
                "costs stand out"
                if probe
                else f"`{arch}`"
            )
            warmup, steps = (PROBE_WARMUP, settings.probe_steps) if probe else (LOOP_WARMUP, settings.loop_steps)
            parts.append(
                f"{network}, batch {results[0].case.batch}, fp32, {settings.device}, {results[-1].threads} torch "
                f"threads; {warmup} warm-up steps then {settings.repeats} interleaved rounds of {steps} steps.\n\n"
                + markdown_table(HEADER, rows)
            )
        return NOTE + "\n\n" + "\n\n".join(parts)

    def goals(self, settings: Settings) -> list[Goal]:
        """Lightning, as train.py runs it with the DataLoader, at most a set share slower than the bare loop."""
        goals = []
        for arch, results in self.tables.items():
            for result in results:
                if arch != PROBE and (result.case.loop, result.case.data) == ("lightning", "dataloader"):
                    overhead = _overhead(result, self._bare(results))[1]
                    goal = f"Lightning loop overhead vs bare PyTorch ≤ {100 * LIGHTNING_OVERHEAD_GOAL:.0f} % ({arch})"
                    met = None if overhead is None else overhead <= LIGHTNING_OVERHEAD_GOAL
                    goals.append(Goal(goal, fmt_pct(overhead), verdict(met)))
        return goals


SECTION = Section("loops", "Lightning training loop vs a bare PyTorch loop", measure, LoopsResult)
