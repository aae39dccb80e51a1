"""What every section is made of: a registry entry (:class:`Section`) and a result type (:class:`SectionResult`)
that renders its table and checks its goals from the rows of its CSV, so that a saved run renders the same
document as the run that measured it."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from benchmarks.loops import LoopResult
from benchmarks.measure import Result
from benchmarks.report import Row, as_text, markdown_table

if TYPE_CHECKING:
    from benchmarks.runner import Runner
    from benchmarks.settings import Settings

NOISE = 0.02  # smallest relative difference a comparison resolves (peak RSS varies by ~1-2 % between runs)
R = TypeVar("R", bound="SectionResult")


class Goal(NamedTuple):
    """One goal stated in words, the value measured for it and the verdict."""

    goal: str
    measured: str
    verdict: str


@dataclass
class SectionResult:
    """A section's measurements as the rows of its CSV, and the facts its text needs that the rows lack (saved
    with the run, see :mod:`benchmarks.document`). Subclasses render the section and check its goals."""

    rows: list[Row]
    facts: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def measured(cls: type[R], rows: Sequence[Mapping[str, object]], **facts: Any) -> R:
        """The result of freshly measured ``rows``, held as the text they are saved as: the tables of a run
        and of its saved CSVs are then the same."""
        return cls(as_text(rows), facts)

    def markdown(self, settings: Settings) -> str:
        """The section's text below its title: what was measured, and the tables."""
        raise NotImplementedError

    def goals(self, settings: Settings) -> list[Goal]:
        return []

    def figures(self) -> dict[str, list[Result]]:
        """Measurements to plot, by figure: ``throughput`` or ``scaling`` (see :func:`benchmarks.document.draw`)."""
        return {}


@dataclass(frozen=True)
class Section:
    """A section of the benchmark: ``--sections`` name, title, how it measures, and what it measures into."""

    name: str
    title: str
    measure: Callable[[Runner], SectionResult]
    result: type[SectionResult]


def goals_table(goals: Sequence[Goal]) -> str:
    return markdown_table(["goal", "measured", "verdict"], [list(goal) for goal in goals])


def parity(ratio: float | None, noise: float) -> str:
    """Verdict of "ours at least as good" for ``ratio`` = ours / theirs (higher is better)."""
    if ratio is None:
        return "not measured"
    if ratio >= 1:
        return "met"
    if ratio >= 1 - noise:
        return f"equal within noise (±{100 * noise:.0f} %)"
    return "**not met**"


def verdict(met: bool | None) -> str:
    return {None: "not measured", True: "met", False: "**not met**"}[met]


def phase(result: Result, name: str) -> tuple[list[float], float | None, float | None]:
    """img/s of every repeat, their median and the peak memory of a phase (empty and ``None`` if not run)."""
    measured = result.phases.get(name)
    if measured is None:
        return [], None, None
    return measured.img_per_s, measured.median, measured.peak_mem_mib


def spread(result: Result, name: str) -> float:
    """Relative range (max - min) / median of a phase's repeats."""
    measured = result.phases.get(name)
    return measured.spread_pct / 100 if measured and measured.img_per_s else 0.0


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def loop_median(result: LoopResult) -> float | None:
    return statistics.median(result.img_per_s) if result.img_per_s else None


def fmt_mem(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"
