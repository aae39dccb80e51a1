"""``models``: every ``--variants`` x ``--sizes`` x precision x memory format x mode (``--modes``): params,
GMACs, train and eval img/s, peak memory."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmarks.measure import Result
from benchmarks.report import fmt_rate, markdown_table, result_from_row, result_row
from benchmarks.runner import Runner
from benchmarks.sections.base import Section, SectionResult, fmt_mem, phase
from benchmarks.settings import Settings

HEADER = [
    "variant",
    "input",
    "batch",
    "precision/format/mode",
    "params (M)",
    "GMACs/img",
    "train img/s",
    "eval img/s",
    "train peak MiB",
    "eval peak MiB",
    "train warm-up s",
    "threads",
]


def _native_size(variant: str) -> int:
    from resattn import get_variant

    return get_variant(variant).input_size[-1]


def measure(runner: Runner) -> ModelsResult:
    s = runner.settings
    rows = []
    for variant in s.variants:
        for size in s.sizes or (_native_size(variant),):
            configs = [(p, f, m) for m in s.modes for p in s.precisions for f in s.formats]
            if variant in s.compile_variants and (*s.default[:2], "compile") not in configs:
                configs.append((*s.default[:2], "compile"))
            cases = [runner.model_case("resattn", variant, size, config) for config in configs]
            runner.together(cases)  # the configurations of one network interleaved
            rows += [result_row(runner.full(case)) for case in cases]
    return ModelsResult.measured(rows)


def _row(result: Result) -> list[object]:
    case = result.case
    train, evaluation = phase(result, "train"), phase(result, "eval")
    warm = result.phases.get("train")
    return [
        f"`{case.model}`",
        case.size,
        case.batch,
        case.config,
        f"{result.params_m:.2f}" if not result.error else "–",
        f"{result.gmacs:.3f}" if result.gmacs else "–",
        fmt_rate(train[0]),
        fmt_rate(evaluation[0]),
        fmt_mem(train[2]),
        fmt_mem(evaluation[2]),
        f"{warm.warmup_s:.1f}" if warm else (result.error or "–")[:60],
        result.threads,
    ]


@dataclass
class ModelsResult(SectionResult):
    """Rows: one per variant, size and configuration."""

    results: list[Result] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.results = [result_from_row(row) for row in self.rows]

    def markdown(self, settings: Settings) -> str:
        note = (
            f"{settings.device}; img/s as median (min–max) of {settings.repeats} repeats; the warm-up column is the "
            "untimed first training step(s), which include torch.compile's compilation."
        )
        return note + "\n\n" + markdown_table(HEADER, [_row(result) for result in self.results])

    def figures(self) -> dict[str, list[Result]]:
        return {"throughput": self.results}


SECTION = Section("models", "Variants: params, GMACs, throughput, peak memory", measure, ModelsResult)
