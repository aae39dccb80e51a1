"""The project's imports point one way, with no cycles (docs/design.md §1 Packages).

Every import counts, inside functions too: a function-level import that closes a circle is still a circle, only one
that Python happens to tolerate until the order of imports changes. The graph is read from the source with ``ast``
(nothing is imported), an arrow going to the most specific project module an import names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("input_conventions", "resattn", "datamodules", "lightning_modules", "analysis", "benchmarks")
SCRIPTS = ("train.py", "eval.py")
TRAINING = ("input_conventions", "resattn", "datamodules", "lightning_modules")
# Which top-level parts each part may import (besides itself): docs/design.md §1.
ALLOWED = {
    "input_conventions": set(),
    "resattn": {"input_conventions"},
    "datamodules": {"input_conventions"},
    "lightning_modules": {"input_conventions", "resattn", "datamodules"},
    "analysis": set(TRAINING),
    "benchmarks": set(TRAINING),
    "train": set(TRAINING),
    "eval": set(TRAINING),
}


def module_files(root: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` of the project's packages and entry scripts (a package is its __init__.py)."""
    files = {path.stem: root / path.name for path in map(Path, SCRIPTS) if (root / path.name).is_file()}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported_names(tree: ast.Module, module: str, is_package: bool) -> Iterable[str]:
    """The dotted names every ``import`` / ``from ... import`` of ``tree`` names, relative ones resolved; for
    ``from a import b`` both ``a.b`` and ``a`` (which of them is a module is decided later)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: project modules it imports}`` for every module of :func:`module_files`."""
    files = module_files(root)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for name in imported_names(tree, module, path.name == "__init__.py"):
            parts = name.split(".")
            found = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in files), None)
            if found is not None and found != module:
                targets.add(found)
        graph[module] = targets
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_in(graph, set(component)) for component in components]


def cycle_in(graph: Mapping[str, set[str]], component: set[str]) -> list[str]:
    """A path from the component's first module back to itself, within the component (breadth-first: shortest)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & component):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def layering_violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Every arrow from one part of the project to a part it must not import (:data:`ALLOWED`)."""
    wrong = []
    for module, targets in sorted(graph.items()):
        part = module.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != part and other not in ALLOWED[part]:
                wrong.append(f"{module} -> {target}")
    return wrong


def write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "datamodules/__init__.py": "",
            "datamodules/reader.py": "def load():\n    from datamodules.stream import FORMAT\n",
            "datamodules/stream.py": "from . import reader\nFORMAT = 1\n",
            "datamodules/plain.py": "import datamodules.reader as r\nfrom datamodules import stream\n",
            "lightning_modules/__init__.py": "",
            "lightning_modules/task.py": "import torch\nfrom datamodules.plain import r\n",
            "resattn/__init__.py": "def f():\n    import lightning_modules.task\n",
            "train.py": "from lightning_modules import task\n",
        },
    )
    graph = import_graph(tmp_path)
    assert graph["datamodules.plain"] == {"datamodules.reader", "datamodules.stream"}
    assert graph["lightning_modules.task"] == {"datamodules.plain"}
    assert graph["train"] == {"lightning_modules.task"}
    assert cycles(graph) == [["datamodules.reader", "datamodules.stream", "datamodules.reader"]]
    assert layering_violations(graph) == ["resattn -> lightning_modules.task"]


def test_no_import_cycles() -> None:
    graph = import_graph(ROOT)
    assert {"train", "eval", "resattn.net", "datamodules.base", "lightning_modules.classifier"} <= graph.keys()
    found = cycles(graph)
    assert not found, "import cycles (function-level imports included): " + "; ".join(" -> ".join(c) for c in found)


def test_imports_follow_the_layers() -> None:
    wrong = layering_violations(import_graph(ROOT))
    assert not wrong, (
        "imports against docs/design.md §1 (resattn and datamodules import no other project package, "
        f"lightning_modules only those two, training never analysis or benchmarks): {wrong}"
    )
