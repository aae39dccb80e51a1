"""``scaling``: Attention-56 at resattn's default configuration: img/s and peak memory against the batch size at
224 and against the input size (32 to 448)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from benchmarks.measure import Result
from benchmarks.report import fmt_rate, markdown_table, result_from_row, result_row
from benchmarks.runner import Runner
from benchmarks.sections.base import Section, SectionResult, fmt_mem, phase
from benchmarks.settings import Settings

MODEL = "resattn56"
HEADER = [
    "input",
    "batch",
    "GMACs/img",
    "train img/s",
    "eval img/s",
    "train peak MiB",
    "eval peak MiB",
    "threads",
    "error",
]


def measure(runner: Runner) -> ScalingResult:
    s = runner.settings
    grid = [(b, 224) for b in s.scaling_batches] + [(s.scaling_size_batch, z) for z in s.scaling_sizes]
    cases = [
        replace(runner.model_case("resattn", MODEL, size, s.default), batch=batch, steps=1) for batch, size in grid
    ]
    return ScalingResult.measured([result_row(runner.full(case)) for case in cases])


def _row(result: Result) -> list[object]:
    train, evaluation = phase(result, "train"), phase(result, "eval")
    return [
        result.case.size,
        result.case.batch,
        f"{result.gmacs:.2f}" if result.gmacs else "–",
        fmt_rate(train[0]),
        fmt_rate(evaluation[0]),
        fmt_mem(train[2]),
        fmt_mem(evaluation[2]),
        result.threads,
        result.error or "",
    ]


@dataclass
class ScalingResult(SectionResult):
    """Rows: the batch sweep at 224, then the input-size sweep."""

    results: list[Result] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.results = [result_from_row(row) for row in self.rows]

    def markdown(self, settings: Settings) -> str:
        note = f"`{MODEL}` at resattn's default configuration on {settings.device} ({'/'.join(settings.default)})."
        return note + "\n\n" + markdown_table(HEADER, [_row(result) for result in self.results])

    def figures(self) -> dict[str, list[Result]]:
        return {"scaling": self.results}


SECTION = Section("scaling", "Scaling of Attention-56 with batch size and input size", measure, ScalingResult)
