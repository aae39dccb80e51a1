"""``python -m benchmarks.run``: throughput and memory tables for resattn, written as Markdown, CSV and plots.

Sections (``--sections``, all by default; one module each in :mod:`benchmarks.sections`):

- ``compare``: ImageNet Attention-56/92 at 224 against pytorchcv's ``resattnet56``/``resattnet92``, every
  precision x memory format in eager mode, each library as its users run it by default, and at its best format;
- ``models``: every ``--variants`` x ``--sizes`` x precision x memory format x mode (``--modes eager,compile``):
  params, GMACs, train and eval img/s, peak memory;
- ``options``: the Lightning training path of a CIFAR network with each fast option alone, all off and all on;
- ``loops``: the Lightning training loop against a bare PyTorch loop (same network, data and batch);
- ``scaling``: Attention-56 img/s and peak memory against batch size and input size (32 to 448);
- ``data``: the data pipelines alone: torchvision per-sample transforms in a DataLoader against the batched
  GPU-resident path (``data.gpu_resident=true``), on the same uint8 images;
- ``formats``: img/s per CPU core of the ImageNet training data path from an ImageFolder tree (PIL), a Hugging
  Face dataset and litdata shards (and GPU decoding of the shards where CUDA is), and the training ceiling that sets;
- ``recipe``: the paper's CIFAR Attention-92 schedule (160k steps at batch 64) through the real training path at
  resattn's default, extrapolated from steady-state img/s, and ImageNet Attention-56 training at resattn's default.

Every measurement runs in a fresh process, with the cores other processes leave idle, and again when other
work disturbed it (:mod:`benchmarks.runner`); ``--quick`` runs a ~2-minute subset. BENCHMARKS.md explains the
method in full.

Outputs (``--out``, default ``benchmarks/results``): ``<section>.csv``, ``run.json`` (the command, the machine,
the settings), ``results.md`` (every table), ``throughput.png`` and ``scaling.png``; ``--update-doc`` also
replaces the generated part of BENCHMARKS.md with ``results.md``. ``--from-results DIR`` measures nothing: it
renders the run saved in DIR again (into DIR unless ``--out`` says otherwise).
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.document import Run, load, save, update_benchmarks_md
from benchmarks.report import machine
from benchmarks.runner import Runner
from benchmarks.sections import get_sections
from benchmarks.sections.base import goals_table
from benchmarks.settings import Settings, parse_args
from benchmarks.worker import ROOT


def measure(settings: Settings, command: str) -> Run:
    """Measure every section of ``settings``, printing each one's text as it is done."""
    runner = Runner(settings)
    started = time.perf_counter()
    results = {}
    for section in get_sections(settings.sections):
        print(f"[{section.name}] {section.title}", flush=True)
        results[section.name] = section.measure(runner)
        print(results[section.name].markdown(settings), "\n", flush=True)
    minutes = (time.perf_counter() - started) / 60
    threads = (
        f"{settings.threads} (--threads)"
        if settings.threads
        else "auto: before each measurement, the cores that other processes left idle (per row in the tables "
        "and in the CSVs' `threads` column)"
    )
    return Run(command, minutes, machine(threads, settings.device), settings, results)


def main(argv: Sequence[str] | None = None) -> Path:
    settings, outputs = parse_args(argv)
    if settings is None:
        try:
            run = load(Path(outputs.from_results))
        except (OSError, ValueError) as err:
            raise SystemExit(f"python -m benchmarks.run: error: {err}") from err
    else:
        run = measure(settings, "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv))
    if goals := run.goals():
        print(goals_table(goals), flush=True)
    out = Path(outputs.out)
    document = save(run, out, outputs.plot)
    if outputs.update_doc:
        update_benchmarks_md(ROOT / "BENCHMARKS.md", document)
    print(f"wrote {out} ({run.minutes:.1f} min of measurements)", flush=True)
    return out


if __name__ == "__main__":
    main()
