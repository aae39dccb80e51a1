"""The mask-measure sections of a results document (``python -m analysis.results ... --output``): what the attention
of a table's networks does, measured by :func:`analysis.mask_measures.measure` (docs/paper.md §1.4, §2).

- ``measures: networks`` (:func:`networks_markdown`): every measure of each attention row's best network, with a
  sentence on how to read each: importance, amplitude, and localisation when the data has object boxes.
- ``measures: runs`` (:func:`runs_markdown`): for rows that differ by training only (experiment=mask_decay), one line
  per finished run: test top-1, mask amplitude per stage, importance of the masks as a whole, and the weight norm
  that sets the logits' scale against a fresh network's.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from analysis.figures import TrainedNetwork
from analysis.mask_measures import READINGS, measure, measures_markdown
from analysis.run_data import load_datamodule, recorded_best_checkpoints
from analysis.runs import Run
from analysis.table_specs import Table
from analysis.tables import matching_runs
from lightning_modules.checkpoint_loading import load_classifier
from lightning_modules.mask_plots import stage_module
from resattn.checkpoints import build_network

MEASURE_IMAGES = 2000  # the first test images each network is measured on: a few minutes per network on a CPU


def _images_text(counts: set[int], num_images: int) -> str:
    shown = "/".join(f"{n:,}" for n in sorted(counts))
    return f"the first {shown} test images" + (" (all of them)" if max(counts) < num_images else "")


def networks_markdown(networks: Sequence[TrainedNetwork], num_images: int = MEASURE_IMAGES) -> str:
    """The measures of each network (an attention row's best), one subsection each, read as the intro says."""
    parts, counts, boxes = [], set(), False
    for trained in networks:
        measured = measure(trained.model, trained.datamodule, num_images=num_images)
        counts.add(measured["images"])
        boxes |= bool(measured.get("localisation"))
        tables = measures_markdown(measured, explain=False).rstrip()
        parts.append(f"#### {trained.label}: `{trained.checkpoint.name}`\n\n{tables}")
    readings = [READINGS["importance"], READINGS["amplitude"]] + ([READINGS["localisation"]] if boxes else [])
    intro = [
        "### What the masks do",
        "",
        "The recorded best checkpoint of each attention row's best run (highest validation top-1, as training picks"
        f" its checkpoints; test top-1 only for runs without one), measured on {_images_text(counts, num_images)}"
        " of its own data (`python -m analysis.mask_measures --ckpt <checkpoint>` measures any split and number).",
        "",
        *(f"- {reading}" for reading in readings),
    ]
    return "\n\n".join(["\n".join(intro), *parts]) + "\n"


def tail_norm_ratio(model: nn.Module, seed: int) -> float:
    """The Frobenius norm of each attention module's mask tail's last 1x1 conv (the logits' scale: no BN follows
    it), trained over a freshly initialised network's of the same architecture built with ``seed``; mean over
    modules. The fresh network has the initial weights' scale, not necessarily the run's exact initial weights."""
    hparams = model.hparams
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = build_network(hparams["arch"], hparams["num_classes"], hparams.get("in_chans"), hparams.get("net"))
    ratios = [
        (module.mask.tail[-1].weight.norm() / fresh.get_submodule(name).mask.tail[-1].weight.norm()).item()
        for name, module in model.net.attention_modules()
    ]
    return statistics.fmean(ratios)


def _per_stage(amplitude: Mapping[str, Mapping[str, Any]], key: str) -> str:
    """``key`` of the amplitude's modules, averaged per stage: ``0.123 / 0.456 / 0.789``."""
    stages: dict[int, list[float]] = {}
    for name, row in amplitude.items():
        stages.setdefault(stage_module(name)[0], []).append(row[key])
    return " / ".join(f"{statistics.fmean(stages[stage]):.3f}" for stage in sorted(stages))


def runs_markdown(table: Table, runs: Sequence[Run], num_images: int = MEASURE_IMAGES) -> str:
    """One line per finished run of every row (its recorded best checkpoint, without attention modules passed
    over): what the rows' training does to the masks' amplitude and importance, beside the accuracy."""
    lines, counts = [], set()
    for row in table.rows:
        for run, checkpoint in recorded_best_checkpoints(matching_runs(table, row, runs)):
            datamodule = load_datamodule(checkpoint, None)
            model = load_classifier(checkpoint, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans)
            measured = measure(model.eval(), datamodule, num_images=num_images, measures=("importance", "amplitude"))
            counts.add(measured["images"])
            mean = measured["importance"]["interventions"]["mean:all"]
            seed = run.values.get("seed")
            norm = f"{tail_norm_ratio(model.cpu(), int(seed)):.2f}" if seed is not None else "—"
            lines.append(
                f"| {row.label} | {seed if seed is not None else '—'} | {100 * run.metrics['test/acc1']:.2f} "
                f"| {_per_stage(measured['amplitude'], 'logit_std')} | {_per_stage(measured['amplitude'], 'range')} "
                f"| {mean['change']:+.2f} ({mean['only_real']} / {mean['only_intervened']}, p {mean['p_value']:.3g}) "
                f"| {norm} |"
            )
    if not lines:
        return "### Masks of every run\n\nNo finished run with attention modules yet.\n"
    header = [
        "### Masks of every run",
        "",
        f"Each finished run's recorded best checkpoint, measured on {_images_text(counts, num_images)}. Mask logit "
        "std: the spread of the logits before the sigmoid, per stage (mean over its modules); M's range: its "
        "5th–95th percentile span, how far the mask can scale the trunk; mean masks: the top-1 change when every "
        "module's mask is replaced by its per-channel mean (right only with the real network / only with the mean "
        "masks, McNemar p), near 0 when the network does not use what its masks say about each image; tail norm: "
        "the mask tail's last 1x1 conv weight norm, trained / a fresh network's (below 1: weight decay shrank it).",
        "",
        "| row | seed | test top-1 % | mask logit std, per stage | M's range, per stage | mean masks: top-1 change, "
        "points | tail norm, trained / fresh |",
        "|---|---|---|---|---|---|---|",
    ]
    return "\n".join(header + lines) + "\n"
