"""``data``: the data pipelines alone: torchvision per-sample transforms in a DataLoader against the batched
GPU-resident path (``data.gpu_resident=true``), on the same uint8 images."""

from __future__ import annotations

import torch

from benchmarks.report import fmt_pct, fmt_rate, markdown_table, number, numbers
from benchmarks.runner import Runner
from benchmarks.sections.base import Section, SectionResult
from benchmarks.settings import Settings

HEADER = ["pipeline", "device", "img/s", "others' CPU (DataLoader workers count as others)"]


def measure(runner: Runner) -> DataResult:
    """The pipelines in this process, with the threads a measurement would get (saved as the fact ``threads``)."""
    from benchmarks.data import data_pipelines

    threads = runner.threads() or torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = data_pipelines(batch=runner.settings.small_batch, repeats=runner.settings.repeats)
    rows = [{**row, "img_per_s": ";".join(f"{v:.1f}" for v in row["img_per_s"])} for row in rows]
    return DataResult.measured(rows, threads=threads)


class DataResult(SectionResult):
    """Rows: one per pipeline (name, device, img/s of every repeat, others' CPU share)."""

    def markdown(self, settings: Settings) -> str:
        rows = [
            [r["pipeline"], r["device"], fmt_rate(numbers(r["img_per_s"])), fmt_pct(number(r["contention"]))]
            for r in self.rows
        ]
        note = (
            "CIFAR-10 training batches (to float, minus the mean image, zero-pad 4, random 32x32 crop, flip) from "
            "`CIFAR10DataModule.train_dataloader()` over in-memory uint8 images, batch "
            f"{settings.small_batch}, without a network; {self.facts['threads']} torch threads in the loading process."
        )
        return note + "\n\n" + markdown_table(HEADER, rows)


SECTION = Section(
    "data", "Data pipelines alone: torchvision DataLoader vs GPU-resident batched augmentation", measure, DataResult
)
