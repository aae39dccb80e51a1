"""W&B dashboards as code: every experiment and sweep opens as a ready view (wandb-workspaces, the optional
``dashboards`` extra: W&B's own library for saved workspaces and reports).

    python -m analysis.dashboards EXPERIMENT [OVERRIDE ...] [--entity E] [--project P] [--group G] [--out FILE.json]

EXPERIMENT names a file of conf/experiment/; the OVERRIDEs are those that followed it in the sweep's command,
``python train.py -m experiment=EXPERIMENT OVERRIDE ...`` (``hparams_search=optuna``, ``callbacks=masks``,
``mask=mixed,spatial``). The views are derived from the config that command composes, never from a list kept here, so
a new experiment file needs no edit:

- the swept keys: the sweeper's ``hydra.sweeper.params`` (the experiment's grid, an Optuna search space), then the
  command's own sweeps (a command-line value replaces the file's, as Hydra's sweepers do). A config group
  (``model``) is read from the runs' ``choices.<group>``, any other key from their nested config
  (``data.label_noise``, ``optimizer.lr``): :mod:`lightning_modules.wandb_runs`;
- the group the views select: the sweep folder's name, as the jobs name their group (a config without a sweep is run
  as a single run: its task name), unless ``--group`` names another;
- the panels: only keys that the runs log (:class:`analysis.dashboard_sweeps.Logged`): ``val/*`` with a validation
  split, ``lr-<optimizer>`` with the LR monitor, the ``attention_masks`` images with the mask callback,
  ``test/acc1`` when the runs test.

The views: a saved workspace per sweep (learning curves grouped by the swept keys, the mean and its standard error
over seeds; parallel coordinates of the swept keys ending in the best val/acc1; test/acc1 per row; the masks); for an
experiment that has a table in analysis/tables.yaml, a report (the paper's number beside each row's mean ± std over
seeds, the claims, the learning curves); for an Optuna search, a workspace of its own (objective per trial, parameter
importance, parallel coordinates of the searched space). ``--out`` writes the views' JSON specification (the library's
own models) with no network access; without it the views are saved to W&B (after ``wandb login``) and their URLs
printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from analysis.dashboard_sweeps import DashboardError, Sweep, experiments
from analysis.dashboard_views import Builder, View, libraries


def logged_in_api() -> Any:
    """W&B's API object, or a :class:`DashboardError` saying how to log in (and that ``--out`` needs no login)."""
    import wandb

    try:
        return wandb.Api()
    except wandb.errors.UsageError as err:
        raise DashboardError(
            f"not logged in to W&B ({err}): run `wandb login` (or set WANDB_API_KEY), then rerun this command; "
            "or write the views' JSON specification offline with --out FILE.json"
        ) from None


def save(views: Sequence[View]) -> list[str]:
    """Save the views to W&B and return their URLs. A report's run sets are given its entity and project here (the
    library looks the project up then)."""
    urls = []
    for view in views:
        if view.kind == "report":
            for block in view.view.blocks:
                for runset in getattr(block, "runsets", []):
                    runset.entity, runset.project = view.view.entity, view.view.project
        view.view.save()
        urls.append(view.view.url)
    return urls


def document(sweep: Sweep, views: Sequence[View], entity: str, project: str) -> dict[str, Any]:
    """What ``--out`` writes: the sweep and each view's specification."""
    return {
        "experiment": sweep.experiment,
        "overrides": list(sweep.overrides),
        "task_name": sweep.task_name,
        "group": sweep.group,
        "swept": {key: sweep.wandb_key(key) for key in sweep.swept},
        "entity": entity,
        "project": project,
        "views": [{"kind": view.kind, "title": view.title, "spec": view.spec()} for view in views],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: build an experiment's views; write them (``--out``) or save them to W&B."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.dashboards",
        description="W&B views of an experiment's sweep, as code: a saved workspace, a report per paper table, an "
        "Optuna search's view.",
    )
    parser.add_argument("experiment", help=f"a file of conf/experiment/ ({', '.join(experiments())})")
    parser.add_argument(
        "overrides", nargs="*", help="the overrides that followed experiment= in the sweep's train.py -m command"
    )
    parser.add_argument("--entity", help="W&B entity (default: your default entity)")
    parser.add_argument("--project", help="W&B project (default: the logger's, conf/logger/wandb.yaml)")
    parser.add_argument("--group", help="the W&B group to select (default: the sweep's, as its jobs name it)")
    parser.add_argument("--out", help="write the views' JSON specification to this file instead of saving them")
    args = parser.parse_args(argv)
    try:
        sweep = Sweep.load(args.experiment, args.overrides, args.group)
        project = args.project or str(OmegaConf.select(sweep.config, "logger.wandb.project", default="resattn"))
        if args.out:
            entity = args.entity or ""
            views = Builder(sweep, entity, project).views()
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(document(sweep, views, entity, project), indent=1) + "\n")
            titles = ", ".join(view.title for view in views)
            print(f"{len(views)} view{'s' * (len(views) > 1)} of group {sweep.group} ({titles}) written to {out}")
            return 0
        libraries()
        entity = args.entity or logged_in_api().default_entity
        views = Builder(sweep, entity, project).views()
        for view, url in zip(views, save(views), strict=True):
            print(f"{view.kind}: {view.title}\n  {url}")
    except DashboardError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
