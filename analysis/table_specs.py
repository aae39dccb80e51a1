"""The tables of the results script as data: layouts and paper numbers from ``analysis/tables.yaml``, each table's
recipe and sweep from its experiment file (``conf/experiment/<table>.yaml``), composed by Hydra."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import OmegaConf

from datamodules.configs import compose
from lightning_modules.config_resolvers import register_resolvers
from resattn.checkpoints import build_network

TABLES_FILE = Path(__file__).with_name("tables.yaml")
_PAPER_VALUE = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?: \((?P<tag>unverified|derived|README)\))?")


@dataclass(frozen=True)
class PaperValue:
    """A number from docs/paper.md §6 and its source tag (paper, unverified, derived, README)."""

    value: float
    tag: str = "paper"

    @classmethod
    def parse(cls, text: str | float | None) -> PaperValue | None:
        """``"5.52 (unverified)"`` -> ``PaperValue(5.52, "unverified")``; ``None`` or ``"—"``: no number."""
        if text is None or text == "—":
            return None
        found = _PAPER_VALUE.fullmatch(str(text))
        if found is None:
            raise ValueError(f"{TABLES_FILE}: cannot read paper number {text!r} (e.g. '4.99' or '5.52 (unverified)')")
        return cls(float(found["value"]), found["tag"] or "paper")

    def __str__(self) -> str:
        return f"{self.value:g}" + ("" if self.tag == "paper" else f" ({self.tag})")


@dataclass(frozen=True)
class Column:
    """A column of a table: the runs it holds (``match``) and the accuracy it reports."""

    label: str
    match: Mapping[str, Any] = field(default_factory=dict)
    metric: str = "test/acc1"


@dataclass(frozen=True)
class Row:
    """A row: the runs it holds (``match``; empty for a paper-only baseline) and the paper's value per column."""

    label: str
    match: Mapping[str, Any]
    paper: tuple[PaperValue | None, ...]
    paper_params_m: PaperValue | None = None
    test_size: int | None = None  # Table 7: the input size the paper tests this network at
    command: str | None = None  # what trains this row, when not the table's whole grid


@dataclass(frozen=True)
class Comparison:
    """A claim of the paper as two rows of a table, compared on the same test images (:mod:`analysis.paired`):
    ``first`` should beat ``second``; ``paper`` says where the paper makes the claim and with which numbers."""

    claim: str
    first: str
    second: str
    paper: str = "—"  # our own tables' claims (cluttered, mask_decay) need not be the paper's


@dataclass(frozen=True)
class Table:
    """A table: layout, the paper's numbers (docs/paper.md §6) if it has any, and the recipe keys its runs should agree
    on. Its runs are those of ``experiment`` (``task_name``; the table's name unless said)."""

    name: str
    title: str
    row_header: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    recipe_keys: tuple[str, ...]
    params: bool = False
    experiment: str = ""
    value: str = "error"  # what a cell shows: "error" 100 * (1 - accuracy), or "accuracy" 100 * accuracy
    comparisons: tuple[Comparison, ...] = ()
    measures: str = "networks"  # the mask measures of the document: see MEASURES_CHOICES
    mask_grids: int = 1  # how many attention rows (in row order) get a mask grid of their best network

    def row(self, label: str) -> Row:
        """The row called ``label``."""
        found = next((row for row in self.rows if row.label == label), None)
        if found is None:
            raise ValueError(f"{self.name} has no row {label!r}; its rows: {', '.join(r.label for r in self.rows)}")
        return found

    @property
    def task_name(self) -> str:
        return self.experiment or self.name

    @property
    def command(self) -> str:
        """The command that trains the whole table (its experiment file holds the sweep)."""
        return f"python train.py -m experiment={self.task_name}"

    @property
    def has_paper_numbers(self) -> bool:
        return any(v is not None for row in self.rows for v in (*row.paper, row.paper_params_m))


TABLE_KEYS = {"title", "row_header", "columns", "rows", "recipe", "params", "experiment", "value", "comparisons"}
TABLE_KEYS |= {"measures", "mask_grids"}
ROW_KEYS = {"label", "match", "paper", "params_m", "test_size", "command"}
MEASURES_CHOICES = {
    "networks": "every measure of each attention row's best network",
    "runs": "one line per finished run: accuracy, mask amplitude and importance (rows that differ by training only)",
    "none": "no mask measures",
}


def _check_keys(where: str, spec: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"{TABLES_FILE}: {where} has unknown keys {unknown}; known: {', '.join(sorted(known))}")


def _table(name: str, spec: Mapping[str, Any]) -> Table:
    _check_keys(name, spec, TABLE_KEYS)
    for row in spec["rows"]:
        _check_keys(f"{name} row {row.get('label')!r}", row, ROW_KEYS)
    columns = tuple(Column(c["label"], c.get("match", {}), c.get("metric", "test/acc1")) for c in spec["columns"])
    rows = []
    for row in spec["rows"]:
        paper = tuple(PaperValue.parse(value) for value in row.get("paper", [None] * len(columns)))
        if len(paper) != len(columns):
            raise ValueError(
                f"{TABLES_FILE}: {name} row {row['label']!r} has {len(paper)} paper numbers for {len(columns)} columns"
            )
        params = PaperValue.parse(row.get("params_m"))
        rows.append(Row(row["label"], row.get("match", {}), paper, params, row.get("test_size"), row.get("command")))
    # YAML cannot splice a list into a list: an entry that is a list (the shared *cifar_recipe) stands for its items
    recipe_keys = tuple(k for entry in spec["recipe"] for k in (entry if isinstance(entry, list) else [entry]))
    if spec.get("value", "error") not in ("error", "accuracy"):
        raise ValueError(f"{TABLES_FILE}: {name}: value must be 'error' or 'accuracy', got {spec['value']!r}")
    comparisons = tuple(
        Comparison(c["claim"], c["first"], c["second"], c.get("paper", "—")) for c in spec.get("comparisons", [])
    )
    measures, mask_grids = spec.get("measures", "networks"), spec.get("mask_grids", 1)
    if measures not in MEASURES_CHOICES:
        choices = "; ".join(f"{key}: {meaning}" for key, meaning in MEASURES_CHOICES.items())
        raise ValueError(f"{TABLES_FILE}: {name}: measures must be one of ({choices}), got {measures!r}")
    if isinstance(mask_grids, bool) or not isinstance(mask_grids, int) or mask_grids < 0:
        raise ValueError(f"{TABLES_FILE}: {name}: mask_grids must be a whole number >= 0, got {mask_grids!r}")
    table = Table(
        name,
        spec["title"],
        spec["row_header"],
        columns,
        tuple(rows),
        recipe_keys,
        spec.get("params", False),
        spec.get("experiment", ""),
        spec.get("value", "error"),
        comparisons,
        measures,
        mask_grids,
    )
    for comparison in comparisons:
        try:
            table.row(comparison.first), table.row(comparison.second)
        except ValueError as err:
            raise ValueError(f"{TABLES_FILE}: comparison {comparison.claim!r}: {err}") from None
    return table


@cache
def load_tables() -> dict[str, Table]:
    """Every table of ``analysis/tables.yaml``, by name."""
    specs = yaml.safe_load(TABLES_FILE.read_text())["tables"]
    return {name: _table(name, spec) for name, spec in specs.items()}


def get_table(name: str) -> Table:
    """The table called ``name``; an unknown name lists the known ones."""
    tables = load_tables()
    if name not in tables:
        raise ValueError(
            f"unknown table {name!r}; known tables: {', '.join(tables)} "
            "(Table 2, the architectures, is printed by `python -m resattn.summary`)"
        )
    return tables[name]


def train_config(overrides: list[str], *, with_hydra: bool = False) -> Any:
    """``conf/train.yaml`` composed with ``overrides`` as ``train.py`` composes it (with Hydra's node when
    ``with_hydra``)."""
    register_resolvers()
    return compose(overrides, hydra_config=with_hydra)


@cache
def experiment_config(name: str) -> Any:
    """``conf/train.yaml`` composed with ``experiment=<name>`` (what its jobs start from), Hydra's node included.
    ``name`` is a table's ``task_name``."""
    return train_config([f"experiment={name}"], with_hydra=True)


def recipe(table: Table) -> dict[str, Any]:
    """The values of the table's recipe keys in its experiment file: the paper's recipe (docs/paper.md §5)."""
    cfg = experiment_config(table.task_name)
    values = {}
    for key in table.recipe_keys:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
        values[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return values


def sweep(table: Table) -> dict[str, str]:
    """The grid the experiment file sweeps (``hydra.sweeper.params``): override key -> comma-separated values."""
    params = OmegaConf.select(experiment_config(table.task_name), "hydra.sweeper.params") or {}
    return {str(key): str(value) for key, value in params.items()}


@cache
def command_params(command: str) -> int:
    """The parameter count of the network that a row's ``python train.py [-m] <overrides>`` command trains, built
    on the meta device (no memory, no weights): what the table shows before that row has a run."""
    cfg = train_config([word for word in shlex.split(command)[2:] if not word.startswith("-")])
    net = OmegaConf.to_container(cfg.model.net, resolve=True)
    with torch.device("meta"):
        network = build_network(cfg.model.arch, cfg.data.num_classes, cfg.data.in_chans, net)
    return sum(p.numel() for p in network.parameters())


def sweep_seeds(table: Table) -> tuple[int, ...]:
    """The seeds the table's experiment trains: its sweep's ``seed`` list (``0,1,2``), else its config's one seed;
    empty when the sweep gives them in another form (e.g. ``range(3)``)."""
    listed = sweep(table).get("seed")
    if listed is None:
        seed = OmegaConf.select(experiment_config(table.task_name), "seed")
        return (int(seed),) if isinstance(seed, int) else ()
    try:
        return tuple(int(value) for value in listed.split(","))
    except ValueError:
        return ()
