"""Named sections of a results document that several commands write (RESULTS.md: one per table), so that one command
replaces its own tables' sections and leaves the others, whose run logs may be on another machine, as they are.

A section is wrapped in markers that name it and the command that wrote it::

    <!-- results:cluttered by `python -m analysis.results cluttered --output RESULTS.md` -->
    ...
    <!-- /results:cluttered -->

The document starts with a comment listing the commands of its sections; anything outside the sections is kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

SECTION = re.compile(
    r"<!-- results:(?P<name>[\w.-]+)(?: by `(?P<command>[^`]*)`)? -->\n(?P<body>.*?)<!-- /results:(?P=name) -->\n?",
    re.DOTALL,
)
HEADER = re.compile(r"\A<!-- Written by .*? -->\n\n?", re.DOTALL)


def header(commands: list[str]) -> str:
    """The document's first line: which commands wrote it, to rerun instead of editing."""
    if len(commands) == 1:
        return f"<!-- Written by `{commands[0]}` from the run logs; rerun it instead of editing. -->\n\n"
    listed = ", ".join(f"`{command}`" for command in commands)
    return (
        f"<!-- Written by {listed} from the run logs (each section names its command); rerun them instead of "
        "editing. -->\n\n"
    )


def section(name: str, body: str, command: str) -> str:
    """``body`` wrapped in the markers of section ``name``, written by ``command``."""
    return f"<!-- results:{name} by `{command}` -->\n{body.rstrip()}\n<!-- /results:{name} -->\n"


def sections_of(text: str) -> dict[str, tuple[str, str | None]]:
    """``{name: (body, command)}`` of the sections in ``text``, in order."""
    return {found["name"]: (found["body"], found["command"]) for found in SECTION.finditer(text)}


def update_document(path: Path, bodies: Mapping[str, str], command: str) -> None:
    """Write ``bodies`` (``{name: markdown}``) as sections of the document ``path``: a section already there is
    replaced in place, a new one appended; the rest of the document is kept, and its header lists the commands
    of all its sections. A section named twice in the document is an error (which one to replace?)."""
    text = path.read_text() if path.is_file() else ""
    names = [found["name"] for found in SECTION.finditer(text)]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"{path} has more than one section named {', '.join(twice)}: keep one of each and rerun")
    text = HEADER.sub("", text, count=1)
    replaced = set()

    def replace(found: re.Match[str]) -> str:
        if found["name"] not in bodies:
            return found[0]
        replaced.add(found["name"])
        return section(found["name"], bodies[found["name"]], command)

    text = SECTION.sub(replace, text)
    for name, body in bodies.items():
        if name not in replaced:
            text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + section(name, body, command)
    commands = list(dict.fromkeys(command for _, command in sections_of(text).values() if command))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header(commands) + text)
