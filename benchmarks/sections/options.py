"""``options``: the Lightning training path of a CIFAR network with each fast option alone, all off and all on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from benchmarks.loops import LoopResult
from benchmarks.report import fmt_rate, fmt_ratio, loop_result_from_row, loop_row, markdown_table
from benchmarks.runner import LOOP_WARMUP, Runner
from benchmarks.sections.base import Section, SectionResult, loop_median, ratio
from benchmarks.settings import Settings

OPTIONS = (  # row label, the options that differ from all off
    ("all off (fp32, NCHW, eager, DataLoader)", {}),
    ("+ channels_last", {"channels_last": True}),
    ("+ bf16-mixed", {"precision": "bf16-mixed"}),
    ("+ torch.compile", {"compile": True}),
    ("+ GPU-resident data", {"data": "device"}),
    ("all on", {"channels_last": True, "precision": "bf16-mixed", "compile": True, "data": "device"}),
    ("all on but compile", {"channels_last": True, "precision": "bf16-mixed", "data": "device"}),
)
HEADER = ["options", "train img/s", "ms/step", "speed-up vs all off", "error"]


def measure(runner: Runner) -> OptionsResult:
    base = runner.loop_case("lightning")
    results = runner.loops([replace(base, **change) for _, change in OPTIONS])
    return OptionsResult.measured([loop_row(result) for result in results])


@dataclass
class OptionsResult(SectionResult):
    """Rows: one per entry of ``OPTIONS``, in its order."""

    results: list[LoopResult] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.results = [loop_result_from_row(row) for row in self.rows]

    def markdown(self, settings: Settings) -> str:
        s = settings
        off = loop_median(self.results[0])
        rows = [
            [label, fmt_rate(r.img_per_s), f"{r.step_ms:.0f}", fmt_ratio(ratio(loop_median(r), off)), r.error or ""]
            for (label, _), r in zip(OPTIONS, self.results, strict=True)
        ]
        note = (
            f"`Trainer.fit` of `ImageClassifier(arch={s.loop_arch})` with CIFAR-10's datamodule and recipe over "
            f"random in-memory images (DataLoader `num_workers=0`), batch {s.small_batch}, {s.device}, {LOOP_WARMUP} "
            f"warm-up steps then {s.repeats} interleaved rounds of {s.loop_steps} timed steps. On a GPU the trainer "
            "config adds cudnn.benchmark and the optimiser is fused; neither applies on a CPU. torch.compile's "
            f"compilation happens in the warm-up and is not timed. torch threads: {self.results[0].threads}."
        )
        return note + "\n\n" + markdown_table(HEADER, rows)


SECTION = Section("options", "Fast options on vs off (the Lightning training path)", measure, OptionsResult)
