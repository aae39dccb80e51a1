"""The paper-table experiment files (docs/paper.md §6): they compose, the results script reads its recipe from them
(docs/paper.md §5), their grid (hydra.sweeper.params) fills every cell of the results table, and a tiny Table 1 runs
end to end into a filled table."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import timm
from helpers import CONF, SMOKE, compose_config, run_script
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import resattn  # noqa: F401  (registers the models)
from analysis import masks, results
from analysis.runs import Run
from analysis.table_specs import load_tables, recipe, sweep
from analysis.tables import cells_of, keys_needed, recipe_deviations

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("table*.yaml"))


def sweep_jobs(name: str, *extra: str) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for ``python train.py -m experiment=<name> <extra>``: the experiment
    file's grid, with command-line values replacing its entries."""
    grid = {**sweep(load_tables()[name]), **dict(e.split("=", 1) for e in extra)}
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in grid.items()])
    return [job for batch in BasicSweeper.split_arguments(overrides, max_batch_size=None) for job in batch]


def table_values(cfg: OmegaConf, name: str) -> dict[str, object]:
    """The config values the results script reads for table ``name``."""
    return {key: OmegaConf.select(cfg, key) for key in keys_needed(load_tables()[name])}


def test_every_paper_table_has_a_file() -> None:
    papers = sorted(name for name, table in load_tables().items() if table.has_paper_numbers)
    assert EXPERIMENTS == ["table1", "table3", "table4", "table5", "table6", "table7"] == papers


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_file_composes_with_the_papers_recipe(name: str, tmp_path: Path) -> None:
    text = (CONF / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n")
    assert "defaults:\n  - /_bases/paper_table\n" in text  # the recipe every table shares, said once
    cfg = compose_config("train", [f"experiment={name}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["task_name"] == name and {"paper", name} <= set(resolved["tags"])
    assert timm.is_model(resolved["module"]["arch"])
    values = table_values(cfg, name)
    table = load_tables()[name]
    assert recipe_deviations(table, [Run(tmp_path, values, {})]) == []
    assert set(recipe(table)) == set(table.recipe_keys) and None not in recipe(table).values()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_experiments_grid_fills_every_cell(name: str, tmp_path: Path) -> None:
    jobs = [[f"experiment={name}", *job] for job in sweep_jobs(name)]
    announced = re.search(
        r"\((\d+) jobs?, the grid below, each in logs/" + name + r"/multiruns/experiment:" + name + "/",
        (CONF / "experiment" / f"{name}.yaml").read_text(),
    )
    assert announced and int(announced[1]) == len(jobs)
    # Jobs that differ only by seed compose alike: compose one per setting.
    settings = {tuple(o for o in job if not o.startswith("seed=")) for job in jobs}
    table, covered = load_tables()[name], set()
    for overrides in sorted(settings):
        cfg = compose_config("train", list(overrides), tmp_path)
        assert cfg.task_name == name
        assert timm.is_model(OmegaConf.to_container(cfg.module, resolve=True)["arch"])
        cells = cells_of(table, table_values(cfg, name))
        assert cells, f"{overrides} fills no cell of {name}"
        covered |= set(cells)
    trained = {(i, j) for i, row in enumerate(table.rows) if row.match for j in range(len(table.columns))}
    assert covered == trained


def test_table7_eval_step_covers_the_papers_test_sizes() -> None:
    text = (CONF / "experiment" / "table7.yaml").read_text()
    sizes = re.search(r'"test_sizes=\[([\d,]+)\]"', text)
    assert sizes is not None
    tested = {row.test_size for row in load_tables()["table7"].rows if row.match}
    assert tested <= {int(s) for s in sizes[1].split(",")}


@pytest.mark.slow
def test_tiny_table1_end_to_end(tmp_path: Path) -> None:
    """Table 1's multirun at tiny scale (3 jobs, CSV logs), then the results script fills every cell."""
    command = load_tables()["table1"].command
    assert shlex.split(command) == ["python", "train.py", "-m", "experiment=table1"]
    tiny = [*SMOKE, "data.num_train_samples=96", "data.num_test_samples=32", "trainer=cpu", "trainer.max_epochs=1"]
    run_script("train.py", *shlex.split(command)[2:], "seed=0", *tiny, "logger=csv", cwd=tmp_path)
    (sweep,) = (tmp_path / "logs" / "table1" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 3
    output = tmp_path / "results" / "table1.md"
    assert results.main(["table1", "--logs", str(tmp_path / "logs"), "--output", str(output)]) == 0
    report = output.read_text()
    rows = [line for line in report.splitlines() if line.startswith("| f") and "(n=" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| f1 mixed", "| f2 channel", "| f3 spatial"]
    assert all("(n=1)" in row and "(unverified)" in row for row in rows)
    # the mask measures of every row's network: the three mask types side by side
    measured = [line[5:].split(":")[0] for line in report.splitlines() if line.startswith("#### ")]
    assert measured == ["f1 mixed", "f2 channel", "f3 spatial"]
    assert "3 finished run(s)" in report and "`model.name`: 'tiny' in 3 run(s) (paper: 'att56')" in report
    # The masks of a finished job, with the data (and preprocessing) read from the job's own saved config.
    assert masks.main(["--ckpt", str(jobs[0] / "checkpoints" / "last.ckpt"), "--num-images", "2"]) == 0
    assert (jobs[0] / "masks" / "attention_masks.png").is_file()


def test_every_fashion_mnist_row_command_composes_into_its_row(tmp_path: Path) -> None:
    """RESULTS.md's table: each row names the command that trains it, and that command's job lands in that row."""
    table = load_tables()["fmnist"]
    recipe_values = recipe(table)
    assert recipe_values["data._target_"] == "datamodules.FashionMNISTDataModule"
    for i, row in enumerate(table.rows):
        args = shlex.split(row.command)
        assert args[:4] == ["python", "train.py", "-m", "experiment=fmnist"]
        (job,) = sweep_jobs("fmnist", *args[4:])
        cfg = compose_config("train", ["experiment=fmnist", *job, *args[4:]], tmp_path)
        assert cells_of(table, table_values(cfg, "fmnist")) == [(i, 0)], row.label
        assert recipe_deviations(table, [Run(tmp_path, table_values(cfg, "fmnist"), {})]) == []
