"""``formats``: images per second per CPU core of the ImageNet training data path from each storage format
(ImageFolder + PIL, Hugging Face datasets, litdata shards; GPU decoding of the shards when CUDA is present), and the
ceiling that puts on ImageNet Attention-56 training."""

from __future__ import annotations

import shlex
import statistics
import sys

from benchmarks.report import fmt_pct, fmt_rate, machine, markdown_table, number, numbers
from benchmarks.runner import Runner
from benchmarks.sections.base import Section, SectionResult
from benchmarks.settings import Settings

PAPER_IMAGENET_IMAGES = 530_000 * 256  # docs/paper.md §5.3: 530k iterations at batch 256, about 136 M images
NODE_CORES = 32  # a 4-GPU training node's share of cores, for the ceiling column
HEADER = [
    "pipeline",
    "option",
    "device",
    "img/s per core",
    "cores per 1,000 img/s",
    f"ceiling on {NODE_CORES} cores",
    f"136 M images on {NODE_CORES} cores take at least",
    "others' CPU",
]


def measure(runner: Runner) -> FormatsResult:
    """The pipelines in this process, one torch thread each (the JPEG set and where the run was made are facts)."""
    from benchmarks.formats import format_pipelines

    rows, jpegs = format_pipelines(batch=runner.settings.small_batch, repeats=runner.settings.repeats)
    info = machine("1", runner.settings.device)
    measured_by = "python -m benchmarks.run " + shlex.join(sys.argv[1:])
    return FormatsResult.measured(rows, **jpegs, date=info["date"], cpu=info["cpu"], gpu=info["gpu"], by=measured_by)


def fmt_hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


class FormatsResult(SectionResult):
    """Rows: one per pipeline (name, data option, device, img/s of every repeat, others' CPU share, or an error)."""

    def markdown(self, settings: Settings) -> str:
        f = self.facts
        rows, best = [], 0.0
        for r in self.rows:
            rates = numbers(r["img_per_s"])
            if not rates:
                rows.append([r["pipeline"], f"`{r['option']}`", r["device"], r["error"], "–", "–", "–", "–"])
                continue
            rate = statistics.median(rates)
            best, ceiling = max(best, rate), rate * NODE_CORES
            rows.append(
                [
                    r["pipeline"],
                    f"`{r['option']}`",
                    r["device"],
                    fmt_rate(rates),
                    f"{1000 / rate:.1f}",
                    f"{ceiling:,.0f} img/s",
                    fmt_hours(PAPER_IMAGENET_IMAGES / ceiling),
                    fmt_pct(number(r["contention"])),
                ]
            )
        note = (
            f"Each storage format's training loader as the datamodule builds it (decode, RandomResizedCrop(224), flip, "
            f"normalise, collate; batch {settings.small_batch}) with `num_workers=0` and one torch thread, so the rate "
            f"is one core's; DataLoader workers multiply it by their cores. The data: {int(f['images'])} JPEGs written "
            f"by the benchmark, {f['mean_megapixels']:.2f} megapixels and {f['mean_kib']:.0f} KiB on average "
            "(ImageNet's: about 0.18 megapixels, 110 KiB), as an ImageFolder tree, a Hugging Face dataset saved to "
            "disk and shards of `python -m datamodules.shards`. The GPU row (`data.gpu_decode=true`) appears when CUDA "
            f"is present (the CPU then only parses headers, draws crops and collates). Measured by `{f['by']}` on "
            f"{f['date']}: {f['cpu']}, GPU {f['gpu']}.\n\n"
            "The ceiling: data loading caps ImageNet Attention-56 training at cores x img/s per core, whatever the "
            f"GPUs; the paper's schedule (530k iterations at batch 256, {PAPER_IMAGENET_IMAGES / 1e6:.0f} M images, "
            f"docs/paper.md §5.3) cannot finish sooner than the time shown with {NODE_CORES} cores loading data. This "
            f"machine's {int(f['cores'])} cores cap it at {best * f['cores']:,.0f} img/s, far above what its CPU "
            "trains the network at (the recipe section)."
        )
        return note + "\n\n" + markdown_table(HEADER, rows)


SECTION = Section(
    "formats",
    "Data formats: ImageFolder + PIL, Hugging Face datasets, litdata shards (and GPU decoding) per CPU core",
    measure,
    FormatsResult,
)
