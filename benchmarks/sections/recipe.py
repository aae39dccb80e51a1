"""``recipe``: the paper's CIFAR Attention-92 schedule (160k steps at batch 64) through the real training path at
resattn's default, extrapolated from steady-state img/s, and ImageNet Attention-56 training at resattn's default."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from benchmarks.loops import DATA_PATHS, LoopResult
from benchmarks.measure import Result
from benchmarks.report import fmt_rate, loop_result_from_row, loop_row, markdown_table, result_from_row, result_row
from benchmarks.runner import LOOP_WARMUP, Runner
from benchmarks.sections.base import Goal, Section, SectionResult, loop_median, phase
from benchmarks.settings import Settings

PAPER_CIFAR_STEPS, PAPER_CIFAR_BATCH = 160_000, 64  # docs/paper.md §5.1
GOAL_MINUTES, GOAL_GPU = 10, "one H100"  # the paper's CIFAR schedule should train this fast on this GPU
IMAGES = PAPER_CIFAR_STEPS * PAPER_CIFAR_BATCH


def measure(runner: Runner) -> RecipeResult:
    """Both data paths of the CIFAR network in one process, then the ImageNet network alone (the name of the GPU
    is saved as the fact ``gpu``)."""
    s = runner.settings
    cifar_arch, imagenet_arch = s.recipe_archs
    precision, memory_format, mode = s.default
    base = runner.loop_case(
        "lightning",
        arch=cifar_arch,
        batch=PAPER_CIFAR_BATCH,
        precision="bf16-mixed" if precision == "bf16-mixed" else "32-true",
        channels_last=memory_format == "channels_last",
        compile=mode == "compile",
    )
    loops = runner.loops([replace(base, data=data) for data in DATA_PATHS])
    imagenet = runner.full(runner.model_case("resattn", imagenet_arch, 224, ("bf16-mixed", memory_format, mode)))
    facts = {} if s.device == "cpu" else {"gpu": torch.cuda.get_device_name(torch.device(s.device))}
    return RecipeResult.measured([*map(loop_row, loops), result_row(imagenet)], **facts)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


@dataclass
class RecipeResult(SectionResult):
    """Rows: the CIFAR training loop per data path (``DATA_PATHS`` order), then the ImageNet network."""

    loops: list[LoopResult] = field(init=False, repr=False)
    imagenet: Result = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.loops = [loop_result_from_row(row) for row in self.rows if row["loop"]]
        self.imagenet = next(result_from_row(row) for row in self.rows if row["library"])

    def _best(self) -> float:
        return max(loop_median(result) or 0.0 for result in self.loops)

    def markdown(self, settings: Settings) -> str:
        s = settings
        rows = []
        for result in self.loops:
            rate = loop_median(result)
            option = "data.gpu_resident=true" if result.case.data == "device" else "DataLoader (default)"
            rows.append(
                [option, fmt_rate(result.img_per_s), fmt_duration(IMAGES / rate if rate else None), result.error or ""]
            )
        cifar_arch, imagenet = self.loops[0].case.arch, self.imagenet
        return (
            f"`Trainer.fit` of `ImageClassifier(arch={cifar_arch})` at resattn's default ({'/'.join(s.default)}) with "
            f"CIFAR-10's datamodule and recipe over random in-memory images, batch {PAPER_CIFAR_BATCH}, {s.device}; "
            f"{LOOP_WARMUP} warm-up steps then {s.repeats} interleaved rounds of {s.loop_steps} steps. The paper's "
            f"schedule is {PAPER_CIFAR_STEPS:,} steps of {PAPER_CIFAR_BATCH} images (docs/paper.md §5.1); its time is "
            "extrapolated from the steady-state img/s, without validation and checkpoint writes.\n\n"
            + markdown_table(["data path", "train img/s", "160k steps take", "error"], rows)
            + f"\n\n`{imagenet.case.model}` at 224x224, {imagenet.case.config}, batch {imagenet.case.batch}: "
            f"{fmt_rate(phase(imagenet, 'train')[0])} train img/s (the models and comparison tables have more)."
        )

    def goals(self, settings: Settings) -> list[Goal]:
        """The paper's CIFAR schedule within ``GOAL_MINUTES`` on ``GOAL_GPU`` (judged on a GPU only)."""
        need = IMAGES / (60 * GOAL_MINUTES)
        best = self._best()
        if settings.device == "cpu":
            verdict = "GPU goal: not applicable on a CPU"
        else:
            verdict = ("met" if best >= need else "**not met**") + f" on {self.facts['gpu']}"
        goal = (
            f"paper CIFAR recipe of {self.loops[0].case.arch} ({PAPER_CIFAR_STEPS // 1000}k steps at batch "
            f"{PAPER_CIFAR_BATCH}) ≤ {GOAL_MINUTES} min on {GOAL_GPU} (≥ {need / 1000:.0f}k img/s)"
        )
        measured = f"{fmt_duration(IMAGES / best if best else None)} at {best:.0f} img/s"
        return [Goal(goal, measured, verdict)]


SECTION = Section(
    "recipe",
    "The paper's CIFAR Attention-92 recipe and ImageNet Attention-56 at resattn's default",
    measure,
    RecipeResult,
)
