"""The project cites only documents it contains (docs/design.md §8).

Every reference to a Markdown document in the repository's text files (Python, Markdown, YAML, shell, TOML,
Makefile) must name a document that exists, and a section (``§N.M``, matched against the document's numbered
headings) or heading (``#anchor``, GitHub's anchors) that the document has. A document is named as a path under
``docs/`` or by an upper-case file name (``README.md``), relative to the repository root or to the citing file;
Markdown links are checked as well, and in ``docs/`` a bare ``§N`` refers to the document it is written in. The
developer notes that docs/ replaced are never cited.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".sh", ".toml")
TEXT_NAMES = ("Makefile",)
# Without git (a copy of the working tree): the folders .gitignore keeps out of the repository, at its top level
# or anywhere (hidden folders are left out too).
IGNORED_TOP_DIRS = {"logs", "outputs", "data", "wandb"}
IGNORED_DIRS = {"build", "dist", "__pycache__"}
# The notes the documents in docs/ were written from; they are not part of the repository.
OLD_NOTES = re.compile(r"\b(?:PAPER|DESIGN)\.md\b")

# A document named in text: a path under docs/, or an upper-case name of two or more characters with an optional
# folder (README.md; a one-letter name is a test's output file).
DOCUMENT = re.compile(r"(?<![\w./-])(docs/(?:[\w.-]+/)*[\w-]+\.md|(?:[\w.-]+/)*[A-Z][A-Z0-9_]+\.md)(?![\w/-])")
ANCHOR = re.compile(r"#([\w-]+)")
# Sections cited after a document: "§1.4", "§7.1-7.3", "§1.4, §2", "§5.1 and §5.3", possibly on the next line.
SECTION_LEAD = re.compile(r"[ \t]*(?:\n[ \t]*(?:#[ \t]*)?)?(?=§)")
SECTION = re.compile(r"§(\d+(?:\.\d+)*)(?:[ \t]*[-–][ \t]*(\d+(?:\.\d+)*))?")
SECTION_JOIN = re.compile(r"\s*(?:,|and)\s*(?=§)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$")
HEADING_NUMBER = re.compile(r"(\d+(?:\.\d+)*)\.?(?:\s|$)")
FENCE = ("```", "~~~")


def repository_files(root: Path) -> list[Path]:
    """The text files of the repository at ``root``: tracked and untracked-but-not-ignored files per git, or,
    without git, every file outside hidden and ignored folders."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        ).stdout.decode()
        paths = [root / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        paths = []
        for folder, dirs, files in os.walk(root):
            ignored = IGNORED_DIRS | (IGNORED_TOP_DIRS if Path(folder) == root else set())
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ignored and not d.endswith(".egg-info")]
            paths += [Path(folder, name) for name in files]
    return sorted(p for p in paths if (p.suffix in TEXT_SUFFIXES or p.name in TEXT_NAMES) and p.is_file())


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@dataclass
class Outline:
    """The section numbers and anchors of a Markdown document's headings (fenced code excluded)."""

    numbers: set[str] = field(default_factory=set)
    anchors: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, path: Path) -> Outline:
        outline, seen, fenced = cls(), Counter(), False
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith(FENCE):
                fenced = not fenced
                continue
            heading = None if fenced else HEADING.match(line)
            if heading is None:
                continue
            title = heading.group(1)
            number = HEADING_NUMBER.match(title)
            if number:
                outline.numbers.add(number.group(1))
            anchor = github_anchor(title)
            outline.anchors.add(anchor if not seen[anchor] else f"{anchor}-{seen[anchor]}")
            seen[anchor] += 1
        return outline


def cited_sections(text: str, pos: int) -> tuple[list[str], int]:
    """The section numbers cited right after position ``pos`` (ranges give both ends), and where they end."""
    lead = SECTION_LEAD.match(text, pos)
    if lead is None:
        return [], pos
    sections, pos = [], lead.end()
    while (section := SECTION.match(text, pos)) is not None:
        sections += [number for number in section.groups() if number]
        pos = section.end()
        join = SECTION_JOIN.match(text, pos)
        if join is None:
            break
        pos = join.end()
    return sections, pos


class Checker:
    """Collects the broken references of one repository: ``(path, line, problem)``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.outlines: dict[Path, Outline] = {}
        self.problems: list[tuple[Path, int, str]] = []

    def outline(self, document: Path) -> Outline:
        if document not in self.outlines:
            self.outlines[document] = Outline.of(document)
        return self.outlines[document]

    def resolve(self, source: Path, name: str, folders: bool = False) -> Path | None:
        """The file (or, with ``folders``, folder) ``name`` cited from ``source``: relative to the repository root or
        to ``source``'s folder."""
        for base in (self.root, source.parent):
            candidate = (base / name).resolve()
            exists = candidate.is_file() or (folders and candidate.is_dir())
            if exists and candidate.is_relative_to(self.root):
                return candidate
        return None

    def report(self, source: Path, text: str, pos: int, problem: str) -> None:
        self.problems.append((source.relative_to(self.root), text.count("\n", 0, pos) + 1, problem))

    def check_target(
        self, source: Path, text: str, pos: int, document: Path, sections: list[str], anchor: str | None
    ) -> None:
        outline = self.outline(document)
        shown = document.relative_to(self.root)
        for number in sections:
            if number not in outline.numbers:
                self.report(source, text, pos, f"{shown} has no section §{number}")
        if anchor is not None and anchor not in outline.anchors:
            self.report(source, text, pos, f"{shown} has no heading #{anchor}")

    def check_file(self, source: Path) -> None:
        text = source.read_text(encoding="utf-8", errors="replace")
        for old in OLD_NOTES.finditer(text):
            self.report(
                source,
                text,
                old.start(),
                f"{old.group()} is a developer note outside the repository: cite docs/paper.md or docs/design.md",
            )
        cited_spans: list[tuple[int, int]] = []
        for match in DOCUMENT.finditer(text):
            if OLD_NOTES.fullmatch(Path(match.group(1)).name):
                continue  # reported above
            document = self.resolve(source, match.group(1))
            if document is None:
                self.report(source, text, match.start(), f"{match.group(1)} does not exist in the repository")
                continue
            anchor = ANCHOR.match(text, match.end())
            sections, end = cited_sections(text, anchor.end() if anchor else match.end())
            cited_spans.append((match.start(), end))
            self.check_target(source, text, match.start(), document, sections, anchor.group(1) if anchor else None)
        if source.suffix == ".md":
            self.check_links(source, text)
            if source.resolve().parent.is_relative_to(self.root / "docs"):
                self.check_own_sections(source, text, cited_spans)

    def check_links(self, source: Path, text: str) -> None:
        """Relative Markdown links: the file or folder must exist; an anchor into a Markdown file must be one of its
        headings."""
        for link in LINK.finditer(text):
            target = link.group(1)
            if re.match(r"[a-z][a-z+.-]*:", target):
                continue  # a URL
            name, _, anchor = target.partition("#")
            if not name:
                self.check_target(source, text, link.start(), source.resolve(), [], anchor)
                continue
            document = self.resolve(source, name, folders=True)
            if document is None:
                self.report(source, text, link.start(), f"link to {name}, which does not exist in the repository")
            elif anchor and document.suffix == ".md":
                self.check_target(source, text, link.start(), document, [], anchor)

    def check_own_sections(self, source: Path, text: str, cited_spans: list[tuple[int, int]]) -> None:
        """In docs/, a ``§N`` that follows no document name is a section of the document itself."""
        for section in SECTION.finditer(text):
            if any(start <= section.start() < end for start, end in cited_spans):
                continue
            numbers = [number for number in section.groups() if number]
            self.check_target(source, text, section.start(), source.resolve(), numbers, None)


def broken_references(root: Path) -> list[str]:
    checker = Checker(root)
    for path in repository_files(checker.root):
        if path.resolve() != Path(__file__).resolve():  # this file's examples are broken on purpose
            checker.check_file(path)
    return [f"{path}:{line}: {problem}" for path, line, problem in sorted(checker.problems, key=lambda p: p[:2])]


def test_every_document_reference_resolves() -> None:
    problems = broken_references(ROOT)
    assert not problems, f"{len(problems)} broken document reference(s):\n" + "\n".join(problems)


def test_the_check_reports_each_kind_of_broken_reference(tmp_path: Path) -> None:
    """A repository with one example of every kind of reference, good and broken (no git: the folder walk)."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "spec.md").write_text(
        "# Spec\n\n## 1. Module\n\n### 1.1 The `mask` branch\n\nSee §1.1 and §4.\n\n```\n## 9. not a heading\n```\n"
        "[up](../NOTES.md) [folder](../docs/) [here](#spec)\n"
        "[there](spec.md#11-the-mask-branch) [gone](spec.md#gone) [file](x.png)\n",
        encoding="utf-8",
    )
    (tmp_path / "NOTES.md").write_text("Notes.\n", encoding="utf-8")
    old_notes = "PAPER"  # the old note's file name is not written out, so that this file never cites it
    (tmp_path / "code.py").write_text(
        '"""docs/spec.md §1.1, §1 and docs/spec.md §1.1-1.2; NOTES.md §3."""\n'
        "# docs/spec.md#1-module docs/spec.md#nothing docs/gone.md\n"
        f"# {old_notes}.md §1\n"
        "# docs/spec.md §9 is fenced; output.md and results/t.md are not documents\n",
        encoding="utf-8",
    )
    for folder in (".venv", "logs", "conf/__pycache__", "conf/data"):  # ignored, ignored, ignored, scanned
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "x.yaml").write_text("# docs/spec.md §5\n", encoding="utf-8")

    assert broken_references(tmp_path) == [
        "code.py:1: docs/spec.md has no section §1.2",
        "code.py:1: NOTES.md has no section §3",
        "code.py:2: docs/spec.md has no heading #nothing",
        "code.py:2: docs/gone.md does not exist in the repository",
        f"code.py:3: {old_notes}.md is a developer note outside the repository: cite docs/paper.md or docs/design.md",
        "code.py:4: docs/spec.md has no section §9",
        "conf/data/x.yaml:1: docs/spec.md has no section §5",
        "docs/spec.md:7: docs/spec.md has no section §4",
        "docs/spec.md:13: docs/spec.md has no heading #gone",
        "docs/spec.md:13: link to x.png, which does not exist in the repository",
    ]
