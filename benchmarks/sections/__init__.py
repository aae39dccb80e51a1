"""The registry of benchmark sections, in the order a run measures them and the document shows them.

Each section is one module that declares ``SECTION``: its ``--sections`` name, its title, the function that
measures it and the result type that renders its table and checks its goals (see :mod:`.base`). Adding a
section is adding its module and its entry below.
"""

from __future__ import annotations

from collections.abc import Iterable

from benchmarks.sections import compare, data, formats, loops, models, options, recipe, scaling
from benchmarks.sections.base import Goal, Section, SectionResult

SECTIONS: dict[str, Section] = {
    section.name: section
    for section in (
        compare.SECTION,
        models.SECTION,
        options.SECTION,
        loops.SECTION,
        scaling.SECTION,
        data.SECTION,
        formats.SECTION,
        recipe.SECTION,
    )
}

__all__ = ["SECTIONS", "Goal", "Section", "SectionResult", "get_sections"]


def get_sections(names: Iterable[str]) -> list[Section]:
    """The sections called ``names``, in that order; a ``ValueError`` naming the known ones for any other name."""
    names = list(names)
    if unknown := [name for name in names if name not in SECTIONS]:
        raise ValueError(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    return [SECTIONS[name] for name in names]
