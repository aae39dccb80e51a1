"""W&B dashboards as code (analysis/dashboards.py) and the runs they slice, offline (no W&B server exists here).

A real multirun and a real Optuna search of the tiny network log to W&B offline; their runs are read back from the
.wandb files with the project's reader. Every experiment's views are built, round-tripped through wandb-workspaces' own
models, and every key they name must be one those runs logged: a renamed metric breaks this test, not a dashboard.
Saving, the one step that needs the server, is checked at the W&B API boundary (``wandb.Api``) by a recording
stand-in that answers as the server does.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import wandb
import wandb_workspaces.reports.v2 as wr
import wandb_workspaces.workspaces as ws
import yaml
from helpers import CONF, ROOT, SMOKE, SMOKE_DATA, quiet_trainer, run_script
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from wandb_workspaces.reports.v2 import internal as report_models
from wandb_workspaces.workspaces import internal as workspace_models

from analysis import dashboards
from analysis.dashboard_sweeps import Sweep, experiments, lr_key
from analysis.dashboard_views import Builder, named_keys
from analysis.wandb_offline import OfflineRun, read_offline_run
from datamodules.synthetic import SyntheticDataModule
from lightning_modules import ImageClassifier
from lightning_modules.wandb_runs import sweep_group

# table1's grid cut to two jobs on the CPU, with the attention-mask images logged to W&B.
GRID = ["trainer=cpu", "callbacks=masks", "mask=mixed,spatial", "seed=0", *SMOKE, "trainer.max_epochs=1"]
# An Optuna search of two trials over table1's recipe (mask and seed fixed, so only optimizer and mask type searched).
SEARCH = [
    "hparams_search=optuna",
    "hydra.sweeper.n_trials=2",
    "trainer=cpu",
    "mask=mixed",
    "seed=0",
    "optimizer.mask_weight_decay=0.0",  # the default outside the paper tables: its runs log lr-SGD/pg1
    *(o for o in SMOKE if not o.startswith("optimizer.lr")),
    "trainer.max_epochs=1",
]


def wandb_runs(jobs: list[Path]) -> list[OfflineRun]:
    runs = []
    for job in jobs:
        (folder,) = (job / "wandb").glob("offline-run-*")
        runs.append(read_offline_run(folder))
    return runs


def job_dirs(logs: Path, task: str) -> list[Path]:
    return sorted(p.parent for p in (logs / task / "multiruns").rglob("run.json"))


def table1_sweep(root: Path, overrides: list[str]) -> tuple[Path, list[Path], list[OfflineRun]]:
    """``python train.py -m experiment=table1 <overrides>`` in ``root``: its folder, job directories and W&B logs."""
    run_script("train.py", "-m", "experiment=table1", *overrides, cwd=root)
    jobs = job_dirs(root / "logs", "table1")
    return root, jobs, wandb_runs(jobs)


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[OfflineRun]]:
    """Two jobs of a grid, logged offline."""
    return table1_sweep(tmp_path_factory.mktemp("grid"), GRID)


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[OfflineRun]]:
    """Two Optuna trials, logged offline."""
    return table1_sweep(tmp_path_factory.mktemp("search"), SEARCH)


def logged_keys(runs: list[OfflineRun]) -> dict[str, set[str]]:
    """What the runs logged, by where a view looks it up (as :func:`analysis.dashboard_views.named_keys` sorts them)."""
    keys: dict[str, set[str]] = {"metrics": set(), "media": set(), "config": set(), "run": {"group", "createdAt"}}
    for run in runs:
        keys["metrics"] |= run.history_keys() | set(run.summary)
        keys["media"] |= run.media_keys()
        keys["config"] |= set(run.flat_config)
    return keys


def round_trip(spec: dict[str, Any], kind: str) -> dict[str, Any]:
    """The spec read back into the library's own objects and written out again."""
    if kind == "report":
        view = wr.Report._from_model(report_models.ReportViewspec.model_validate(spec))
    else:
        view = ws.Workspace._from_model(workspace_models.View.model_validate(spec))
    return view._to_model().model_dump(mode="json", by_alias=True, exclude_none=True)


def swept_in_file(experiment: str) -> set[str]:
    """The keys that the experiment file's grid sweeps (read as YAML, not through the code under test)."""
    params = yaml.safe_load((ROOT / "conf" / "experiment" / f"{experiment}.yaml").read_text()).get("hydra") or {}
    params = (params.get("sweeper") or {}).get("params") or {}
    return {key for key, value in params.items() if "," in str(value)}


@pytest.mark.slow
def test_a_multirun_is_one_group_of_finished_runs_with_nested_config(grid: tuple) -> None:
    root, jobs, runs = grid
    assert len(jobs) == 2 and all(run.finished for run in runs)
    assert len({run.run_id for run in runs}) == 2
    assert {run.run_id for run in runs} == {json.loads((job / "run.json").read_text())["wandb_id"] for job in jobs}
    (sweep_folder,) = {job.parent for job in jobs}
    # the sweep's folder, whatever the layout (a name past W&B's 128 characters shortened with a digest)
    assert {run.group for run in runs} == {sweep_group(str(sweep_folder), "table1")}
    assert sweep_folder.name.startswith(next(iter(runs)).group[:100])
    for job, run in zip(jobs, runs, strict=True):
        mask = run.config["model"]["net"]["mask_type"]
        assert run.config["choices"]["mask"] == mask and run.flat_config["optimizer.lr"] == 0.05
        assert run.job_type == "train" and run.name == job.name
        assert {"table1", f"mask={mask}", "seed=0"} <= set(run.tags)
    # The views of that command select exactly this group and group by what it swept.
    sweep = Sweep.load("table1", GRID)
    assert sweep.group == next(iter(runs)).group and sweep.row_keys == ["choices.mask"]
    # A rerun of the sweep continues nothing and makes no new W&B runs; an evaluation joins the group.
    run_script("train.py", "-m", "experiment=table1", *GRID, cwd=root)
    assert [len(list((job / "wandb").glob("offline-run-*"))) for job in jobs] == [1, 1]
    best = next((jobs[0] / "checkpoints").glob("best-*.ckpt"))
    run_script("eval.py", "logger=wandb", f"ckpt_path={best}", *SMOKE_DATA, cwd=root)
    (folder,) = (root / "logs" / "eval" / "runs").glob("*/*/wandb/offline-run-*")
    evaluation = read_offline_run(folder)
    assert evaluation.finished and evaluation.group == next(iter(runs)).group and evaluation.job_type == "eval"


@pytest.mark.slow
def test_an_optuna_search_is_one_group_of_finished_runs(search: tuple) -> None:
    _, jobs, runs = search
    assert len(jobs) == 2 and all(run.finished for run in runs)
    assert len({run.run_id for run in runs}) == 2
    (sweep_folder,) = {job.parent for job in jobs}
    assert (
        {run.group for run in runs}
        == {sweep_group(str(sweep_folder), "table1")}
        == {Sweep.load("table1", SEARCH).group}
    )
    for run in runs:
        assert {"optimizer", "model"} <= set(run.config) and "lr" in run.config["optimizer"]
        assert any(tag.startswith("optimizer.lr=") for tag in run.tags)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", experiments())
def test_every_experiment_builds_views_that_name_only_logged_keys(experiment: str, grid: tuple, search: tuple) -> None:
    """For every experiment file (a new one included) and its Optuna search: views that round-trip through the
    library's models, group by the file's swept keys, select the sweep's group, and name only keys that the real runs
    logged."""
    logged = logged_keys(grid[2] + search[2])
    for overrides in ([], ["hparams_search=optuna"]):
        sweep = Sweep.load(experiment, overrides)
        views = Builder(sweep, "entity", "resattn").views()
        assert [v.kind for v in views] == (
            ["search"] if overrides else ["workspace", *(["report"] if sweep.table() else [])]
        )
        for view in views:
            spec = view.spec()
            assert round_trip(spec, view.kind) == spec
            named = named_keys(spec)
            patterns = named.pop("patterns")
            # the fixture's runs are table1's: a group only another experiment selects (cluttered_row) is logged as
            # choices.<group> by that experiment's runs, as every group choice is (lightning_modules/wandb_runs.py)
            own_groups = {key for key in named["config"] if key.startswith("choices.") and (CONF / key[8:]).is_dir()}
            logged_here = {**logged, "config": logged["config"] | own_groups}
            for where, keys in named.items():
                missing = keys - logged_here[where]
                assert not missing, f"{view.title} names {where} keys no run logged: {missing}"
            unmatched = {p for p in patterns if not any(re.search(p, key) for key in logged["metrics"])}
            assert not unmatched, f"{view.title} selects metrics that no run logged: {unmatched}"
            assert "task_name" in named["config"] and sweep.group in json.dumps(spec)
        grouped = {key.lstrip("+~") for key in sweep.swept if key != "seed"}
        assert {key.removeprefix("choices.") for key in sweep.row_keys} == grouped
        if not overrides:
            assert set(sweep.swept) == swept_in_file(experiment)


@pytest.mark.slow
def test_the_grid_views_show_masks_curves_and_paper_numbers(grid: tuple) -> None:
    sweep = Sweep.load("table1", GRID)
    workspace, report = Builder(sweep, "entity", "resattn").views()
    named = named_keys(workspace.spec())
    assert named["media"] == {"attention_masks"}
    assert named["patterns"] == {"^mask/logit_std/stage", "^mask/range/stage"}  # the masks' amplitude per module
    logged = logged_keys(grid[2])["metrics"]
    assert {"mask/logit_std/stage1_module1", "mask/range/stage3_module1"} <= logged
    assert {"val/acc1", "train/loss", "lr-SGD", "test/acc1", "trainer/global_step"} <= named["metrics"]
    assert named["config"] == {"choices.mask", "task_name"}  # seed=0 fixed the seed: not swept
    text = json.dumps(report.spec())
    assert "Table 1: mask activation" in text and "5.52 % error (unverified)" in text and "0.9448" in text
    assert "mask=spatial" in text and "6.33 % error (unverified)" in text


def test_out_writes_every_view_without_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(wandb, "Api", lambda *args, **kwargs: pytest.fail("--out reached for W&B's API"))
    out = tmp_path / "views" / "table3.json"
    assert dashboards.main(["table3", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["swept"] == {"model": "choices.model", "attention": "choices.attention", "seed": "seed"}
    workspace, report = written["views"]
    assert workspace["kind"] == "workspace" and report["kind"] == "report"
    grouping = workspace["spec"]["spec"]["section"]["runSets"][0]["grouping"]
    assert [g["name"] for g in grouping] == ["choices.value.model", "choices.value.attention"]
    assert "4.99 % error" in json.dumps(report["spec"])  # Attention-92, ARL
    assert str(out) in capsys.readouterr().out


def test_bad_inputs_say_what_to_do(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert dashboards.main(["table9", "--out", "x.json"]) == 1
    assert "unknown experiment 'table9'" in (err := capsys.readouterr().err) and "table3" in err and "quickstart" in err
    assert dashboards.main(["table3", "model=att999", "--out", "x.json"]) == 1
    assert "att999" in (err := capsys.readouterr().err) and "att56" in err  # Hydra's list of the options
    monkeypatch.setitem(sys.modules, "wandb_workspaces", None)  # the extra not installed
    assert dashboards.main(["table3", "--out", "x.json"]) == 1
    assert "pip install 'wandb-workspaces>=0.4.13'" in capsys.readouterr().err


@pytest.mark.slow
def test_saving_without_login_says_wandb_login(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_API")}
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.dashboards", "quickstart"],
        cwd=ROOT,
        env={**env, "HOME": str(tmp_path), "NETRC": str(tmp_path / "netrc")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "wandb login" in proc.stderr and "--out FILE.json" in proc.stderr


class RecordingApi:
    """Stands in for ``wandb.Api`` where wandb-workspaces reaches the W&B server: records every GraphQL call and
    answers as the server does (the project's id, the saved view echoed back)."""

    calls: ClassVar[list[tuple[str, dict[str, Any]]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.default_entity = "me"
        self._service_api = SimpleNamespace(execute_graphql=self.execute, app_url="https://wandb.test")

    def execute(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((query, variables))
        if "ProjectInternalId" in query:
            return {"project": {"id": "p", "internalId": "42"}}
        view = {"id": f"view{len(self.calls)}", "name": variables.get("name") or "nw-abc-v"}
        if "UpsertView2" not in query:  # a report: the whole view comes back
            project = {"id": "p", "name": variables["projectName"], "entityName": variables["entityName"]}
            view |= {"displayName": variables["displayName"], "project": project, "spec": variables["spec"]}
        return {"upsertView": {"view": view, "inserted": True}}

    def projects(self, entity: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(name="resattn")]


def test_saving_sends_the_views_to_the_wandb_api(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one step that needs a server, checked at W&B's API boundary: what would be sent. (Not tested against a
    live server: none exists here.)"""
    RecordingApi.calls = []
    monkeypatch.setattr(wandb, "Api", RecordingApi)
    assert dashboards.main(["table3", "--project", "resattn"]) == 0
    upserts = [(query, variables) for query, variables in RecordingApi.calls if "upsertView" in query]
    assert [v["entityName"] for _, v in upserts] == ["me", "me"]
    (workspace, report) = (json.loads(v["spec"]) for _, v in upserts)
    filters = workspace["section"]["runSets"][0]["filters"]["filters"]
    assert {(f["key"]["name"], f["value"]) for f in filters} == {
        ("group", Sweep.load("table3").group),
        ("task_name", "table3"),
    }
    grids = [block for block in report["blocks"] if block.get("type") == "panel-grid"]
    assert all(rs["project"]["name"] == "resattn" for grid in grids for rs in grid["metadata"]["runSets"])
    assert any("ProjectInternalId" in query for query, _ in RecordingApi.calls)
    printed = capsys.readouterr().out
    assert "https://wandb.test/me/resattn?nw=" in printed and "https://wandb.test/me/resattn/reports/" in printed


@pytest.mark.parametrize(
    ("optimizer", "arch"),
    [
        ({"name": "sgd", "lr": 0.05}, "resattn_tiny_cifar"),
        ({"name": "sgd", "lr": 0.05, "mask_weight_decay": 0.0}, "resattn_tiny_cifar"),
        ({"name": "sgd", "lr": 0.05, "mask_weight_decay": 0.0}, "resattn_plaincnn_cifar"),  # no mask branch
        (
            {"name": "adamw", "lr": 0.01, "no_weight_decay_on_norm_and_bias": True, "mask_weight_decay": 0.0},
            "resattn_tiny_cifar",
        ),
    ],
)
def test_the_learning_rate_key_is_the_one_lightning_logs(optimizer: dict[str, Any], arch: str, tmp_path: Path) -> None:
    """lr_key names what LearningRateMonitor logs for the project's optimizers (one or several parameter groups)."""
    data = SyntheticDataModule(image_size=16, num_train_samples=64, num_test_samples=32, batch_size=32)
    model = ImageClassifier(arch=arch, num_classes=10, optimizer=optimizer)
    trainer = quiet_trainer(
        tmp_path, max_steps=1, logger=CSVLogger(tmp_path), callbacks=[LearningRateMonitor()], limit_val_batches=0
    )
    trainer.fit(model, datamodule=data)
    (metrics,) = tmp_path.rglob("metrics.csv")
    assert lr_key(optimizer, arch) in metrics.read_text().splitlines()[0].split(",")
