"""The paper's claims in miniature: two rows of a table compared on the same test images.

A claim (``comparisons`` in ``analysis/tables.yaml``) says that the networks of one row beat those of another: ARL
beats NAL (paper Table 3), an attention network beats a ResNet of its size (Table 6). With one or a few seeds per row
a difference in test top-1 says little by itself: one 10,000-image test set alone moves a 95 % accuracy by about
±0.4 points (95 % interval). The two networks see the same images, though, so the images on which they disagree
decide: McNemar's exact test asks whether "right only with the first" and "right only with the second" are as
lopsided as they would be by chance if both networks were equally accurate.

Each finished run's recorded best checkpoint (the one it was tested with) predicts the test split of its own run
config, at the precision the run was trained and tested at (:mod:`analysis.predictions`, which keeps them in the run
directory). Runs of the two rows are paired by seed; the disagreements of all pairs are pooled into one test.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from analysis.predictions import correct_on_test_split
from analysis.run_data import recorded_best_checkpoints
from analysis.runs import Run
from analysis.table_specs import Comparison, Table
from analysis.tables import matching_runs

SIGNIFICANCE = 0.05


def mcnemar_p(only_first: int, only_second: int) -> float:
    """McNemar's exact two-sided p-value: the chance of a split of the disagreements at least as lopsided as
    ``only_first`` : ``only_second`` when each disagreement is a fair coin flip (both networks equally accurate)."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_first, only_second) + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class PairedResult:
    """The outcome of one comparison over the seeds both rows have."""

    seeds: tuple[int, ...]
    images: int  # test images per seed
    first_right: int  # summed over the seeds
    second_right: int
    only_first: int
    only_second: int

    @property
    def difference(self) -> float:
        """Mean test top-1 of the first row minus the second's, in points (over the paired seeds)."""
        return 100.0 * (self.first_right - self.second_right) / (self.images * len(self.seeds))

    @property
    def p_value(self) -> float:
        return mcnemar_p(self.only_first, self.only_second)

    @property
    def verdict(self) -> str:
        if self.p_value >= SIGNIFICANCE:
            return f"not distinguishable (p ≥ {SIGNIFICANCE:g})"
        return "yes" if self.difference > 0 else "no: the reverse holds"


def _best_checkpoints_by_seed(table: Table, label: str, runs: Sequence[Run]) -> dict[int, Path]:
    """``{seed: recorded best checkpoint}`` of the row's finished runs (the first run of a seed by path)."""
    found: dict[int, Path] = {}
    row_runs = sorted(matching_runs(table, table.row(label), runs), key=lambda r: str(r.path))
    for run, checkpoint in recorded_best_checkpoints(row_runs):
        seed = run.values.get("seed")
        if seed is not None and int(seed) not in found:
            found[int(seed)] = checkpoint
    return found


def compare(table: Table, comparison: Comparison, runs: Sequence[Run]) -> PairedResult | None:
    """The comparison over the seeds both rows have finished runs for; None when they share none."""
    first = _best_checkpoints_by_seed(table, comparison.first, runs)
    second = _best_checkpoints_by_seed(table, comparison.second, runs)
    seeds = tuple(sorted(first.keys() & second.keys()))
    if not seeds:
        return None
    totals = {"first_right": 0, "second_right": 0, "only_first": 0, "only_second": 0}
    images = None
    for seed in seeds:
        a, b = correct_on_test_split(first[seed]), correct_on_test_split(second[seed])
        if a.shape != b.shape or (images is not None and len(a) != images):
            raise ValueError(
                f"{comparison.claim}: the runs of seed {seed} were tested on different test sets "
                f"({len(a)} and {len(b)} images); paired runs must share their test split"
            )
        images = len(a)
        totals["first_right"] += int(a.sum())
        totals["second_right"] += int(b.sum())
        totals["only_first"] += int((a & ~b).sum())
        totals["only_second"] += int((~a & b).sum())
    return PairedResult(seeds, images or 0, **totals)


def comparisons_markdown(table: Table, runs: Sequence[Run]) -> str:
    """The table's claims (``comparisons``) as a markdown section; empty when it has none."""
    if not table.comparisons:
        return ""
    ours = any(comparison.paper == "—" for comparison in table.comparisons)
    lines = [
        "### Claims, measured" if ours else "### The paper's claims, measured",
        "",
        "Each claim compares two rows' recorded best checkpoints on the same test images (seeds paired, "
        "disagreements pooled), recomputed from their predictions at the precision they were tested at. "
        f"McNemar's exact test on the images exactly one of the two gets right; 'yes' needs p < {SIGNIFICANCE:g}.",
        "",
        "| claim (first beats second) | paper | seeds | first − second, top-1 points | right only with first / "
        "only with second | McNemar p | holds here? |",
        "|---|---|---|---|---|---|---|",
    ]
    for comparison in table.comparisons:
        claim = f"{comparison.claim}: {comparison.first} vs {comparison.second}"
        result = compare(table, comparison, runs)
        if result is None:
            lines.append(f"| {claim} | {comparison.paper} | — | — | — | — | not yet: no seed with both rows finished |")
            continue
        seeds = ", ".join(str(s) for s in result.seeds)
        lines.append(
            f"| {claim} | {comparison.paper} | {seeds} | {result.difference:+.2f} | {result.only_first} / "
            f"{result.only_second} | {result.p_value:.3g} | {result.verdict} |"
        )
    return "\n".join(lines) + "\n"
