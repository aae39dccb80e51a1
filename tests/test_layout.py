"""Files with one job each: no source file outside tests/ grows past :data:`MAX_LINES` (issue 27). A file that does
holds more than one job; split it where the jobs part, as docs/design.md §1 lays the packages out."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 350


def source_files() -> list[Path]:
    """The project's tracked and new (not ignored) .py files outside tests/."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if not name.startswith("tests/") and (ROOT / name).is_file()]


def test_no_source_file_is_longer_than_the_limit() -> None:
    files = source_files()
    assert ROOT / "train.py" in files and ROOT / "datamodules" / "base.py" in files
    lengths = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines()) for path in files}
    long = {name: lines for name, lines in sorted(lengths.items()) if lines > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them by job): {long}"
