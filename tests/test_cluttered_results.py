"""``python -m analysis.results cluttered|mask_decay --output`` on real tiny runs of the two experiments (a few
training steps on small real Fashion-MNIST data): the table with the rows and seeds still missing, the claims over
the seeds both rows have, the mask measures and grids, and the document's sections replaced in place."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from files import write_idx_gz
from helpers import ROOT, compose_config
from omegaconf import open_dict
from test_experiments import sweep_jobs, table_values

import analysis.figures as figures
from analysis.results import main
from analysis.run_data import finished_best_checkpoint, load_datamodule
from analysis.runs import load_run
from analysis.sections import section, sections_of, update_document
from analysis.table_specs import load_tables
from analysis.tables import cells_of
from datamodules import FashionMNISTDataModule
from datamodules.fashion_mnist import DEBIAN_DIR
from lightning_modules.training_task import train

ARL, NAL = "Attention (tiny Attention-56 layout), ARL", "Attention (tiny Attention-56 layout), NAL"
SHORT = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "callbacks.progress_bar.refresh_rate=0",
    "scheduler.warmup_steps=0",
    "logger=csv",
    "data.batch_size=16",
    "data.eval_batch_size=16",
    "data.num_workers=0",
    "data.max_train_samples=32",
    "data.max_eval_samples=24",
]
SMALL_CANVAS = ["data.canvas_size=32", "data.num_fragments=2", "data.fragment_size=6"]


@pytest.fixture(scope="module")
def small_fmnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 120 training and 40 test images of the real Fashion-MNIST, as the IDX files ``system_dir`` holds."""
    folder = tmp_path_factory.mktemp("fmnist")
    pool, test, _ = FashionMNISTDataModule(root=DEBIAN_DIR).load_splits()
    for split, dataset, n in (("train", pool, 120), ("t10k", test, 40)):
        write_idx_gz(folder / f"{split}-images-idx3-ubyte.gz", dataset.images[:n, 0].numpy())
        write_idx_gz(folder / f"{split}-labels-idx1-ubyte.gz", dataset.labels[:n].numpy())
    return folder


def train_job(logs: Path, task: str, job: str, overrides: list[str], scratch: Path) -> Path:
    """A real (tiny) training job of a multirun, in ``logs/<task>/multiruns/<job>`` (train saves its config there)."""
    run = logs / task / "multiruns" / job
    cfg = compose_config("train", overrides, scratch)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
    train(cfg)
    return run


@pytest.fixture(scope="module")
def logs(small_fmnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """experiment=cluttered with ARL, NAL and the CNN on seed 0 (the ResNet not run yet, seeds 1 and 2 missing),
    experiment=mask_decay with the recipe and without mask decay on seed 0."""
    scratch = tmp_path_factory.mktemp("jobs")
    logs = scratch / "logs"
    data = [f"data.system_dir={small_fmnist}", *SHORT]
    for row in ("attention_arl", "attention_nal", "cnn"):
        overrides = ["experiment=cluttered", f"cluttered_row={row}", "seed=0", *data, *SMALL_CANVAS]
        train_job(logs, "cluttered", f"{row}-0", overrides, scratch)
    for decay in ("null", "0.0"):
        overrides = ["experiment=mask_decay", f"optimizer.mask_weight_decay={decay}", "seed=0", *data]
        train_job(logs, "mask_decay", f"decay{decay}-0", overrides, scratch)
    return logs


def test_the_cluttered_section_answers_with_partial_grids(
    logs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = tmp_path / "RESULTS.md"
    document.write_text((ROOT / "RESULTS.md").read_text())  # its Fashion-MNIST section's logs are not here
    before = sections_of(document.read_text())
    drawn_boxes = []
    original = figures.mask_figure
    monkeypatch.setattr(figures, "mask_figure", lambda *a, **kw: drawn_boxes.append(kw["boxes"]) or original(*a, **kw))
    assert main(["cluttered", "--logs", str(logs), "--output", str(document)]) == 0
    text = document.read_text()
    command = f"python -m analysis.results cluttered --logs {logs} --output {document}"
    header = text.split("\n", 1)[0]
    assert header.startswith("<!-- Written by `python -m analysis.results fmnist --output RESULTS.md`, ")
    assert header.endswith(
        f"`{command}` from the run logs (each section names its command); rerun them instead of editing. -->"
    )
    sections = sections_of(text)
    expected = list(before) if "cluttered" in before else [*before, "cluttered"]  # replaced in place, or added
    assert list(sections) == expected and all(sections[name] == before[name] for name in before if name != "cluttered")
    body, written_by = sections["cluttered"]
    assert written_by == command
    # the table: three rows with one seed each, the ResNet not run yet, and the seeds still to come
    assert f"| {ARL} | 0.068 |" in body and f"| {NAL} | 0.068 |" in body
    assert "| pre-activation ResNet (same size) | 0.069 | not run yet |" in body  # counted from its command
    assert re.search(r"\| plain CNN \(same size\) \| 0\.073 \| \d+\.\d\d \(n=1\) \|", body)
    assert (
        f"Seeds of the experiment (0, 1, 2) not finished yet: {ARL}: 1, 2; {NAL}: 1, 2; plain CNN (same size): 1, 2."
        in body
    )
    assert "Commands (each trains the experiment's seeds, 0, 1, 2):" in body
    assert "Run: `python train.py -m experiment=cluttered cluttered_row=resnet`." in body
    # the claims: over seed 0 where both rows have it, "not yet" where one row has no finished run
    claims = {line.split(" | ")[0][2:]: line.split(" | ") for line in body.splitlines() if " vs " in line}
    assert "### Claims, measured" in body and len(claims) == 4
    for claim in ("attention residual learning", "an attention network beats a plain CNN"):
        (row,) = [cells for name, cells in claims.items() if name.startswith(claim)]
        only_first, only_second = (int(n) for n in row[4].split(" / "))
        assert row[2] == "0" and float(row[3]) == pytest.approx(100 * (only_first - only_second) / 24, abs=0.006)
    for claim in ("an attention network beats a pre-activation", "residual units beat a plain CNN"):
        (row,) = [cells for name, cells in claims.items() if name.startswith(claim)]
        assert row[-1] == "not yet: no seed with both rows finished |"
    # the grids of the ARL and NAL networks, with each image's object box
    for name in ("cluttered_masks.png", "cluttered_masks_2.png"):
        assert f"](results/{name})" in body and (tmp_path / "results" / name).read_bytes()[:4] == b"\x89PNG"
    arl = finished_best_checkpoint(logs / "cluttered" / "multiruns" / "attention_arl-0")
    boxes = load_datamodule(arl, None).boxes("test")
    assert len(drawn_boxes) == 2 and all(torch.equal(found, boxes[:8]) for found in drawn_boxes)
    # the measures of both attention networks, localisation against the chance of the boxes' share
    assert "measured on the first 24 test images (all of them)" in body
    assert f"#### {ARL}: `{arl.name}`" in body and f"#### {NAL}: `" in body
    chance = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).double().mean().item() / 32**2
    assert body.count(f"Localisation: Chance here: {chance:.3f}.") == 2
    assert body.count("| mean mask, all | ") == 2 and body.count("| stage 3, module 1 | 64×8×8 | ") == 2
    # a second call replaces the section in place and keeps the other
    assert main(["cluttered", "--logs", str(logs), "--output", str(document)]) == 0
    again = sections_of(document.read_text())
    assert list(again) == expected and all(again[name] == before[name] for name in before if name != "cluttered")
    assert again["cluttered"] == sections["cluttered"]


def test_the_mask_decay_section_reports_every_run(logs: Path, tmp_path: Path) -> None:
    document = tmp_path / "RESULTS.md"
    assert main(["mask_decay", "--logs", str(logs), "--output", str(document)]) == 0
    ((body, _),) = sections_of(document.read_text()).values()
    assert "| every weight decayed (the recipe) | not run yet |" not in body
    assert "| no decay on norms and biases | not run yet |" in body
    assert "### Claims, measured" in body and "| no decay on the mask branches raises accuracy: " in body
    assert "### Masks of every run" in body and "measured on the first 24 test images (all of them)" in body
    table = body.split("### Masks of every run")[1]
    lines = [line.split(" | ") for line in table.splitlines() if line.startswith("| ") and " | 0 | " in line]
    assert [cells[0] for cells in lines] == ["| every weight decayed (the recipe)", "| no decay on the mask branches"]
    for cells, job in zip(lines, ("decaynull-0", "decay0.0-0"), strict=True):
        accuracy = load_run(logs / "mask_decay" / "multiruns" / job, set()).metrics["test/acc1"]
        assert cells[2] == f"{100 * accuracy:.2f}"
        assert len(cells[3].split(" / ")) == 3 and all(float(v) > 0 for v in cells[3].split(" / "))
        assert re.fullmatch(r"[+-]\d+\.\d\d \(\d+ / \d+, p [\d.e-]+\)", cells[5])
        assert 0.5 < float(cells[6].removesuffix(" |")) < 2  # two steps barely move the tail's weights


def test_sections_are_replaced_in_place_and_the_rest_kept(tmp_path: Path) -> None:
    document = tmp_path / "R.md"
    document.write_text("<!-- Written by `old` from the run logs; rerun it instead of editing. -->\n\nnotes by hand\n")
    update_document(document, {"a": "## A\n", "b": "## B\n"}, "cmd 1")
    update_document(document, {"a": "## A again\n"}, "cmd 2")
    assert document.read_text() == (
        "<!-- Written by `cmd 2`, `cmd 1` from the run logs (each section names its command); rerun them instead of "
        "editing. -->\n\nnotes by hand\n\n<!-- results:a by `cmd 2` -->\n## A again\n<!-- /results:a -->\n\n"
        "<!-- results:b by `cmd 1` -->\n## B\n<!-- /results:b -->\n"
    )
    document.write_text(document.read_text() + "\n" + section("a", "## A twice", "cmd 3"))
    with pytest.raises(ValueError, match="more than one section named a: keep one of each and rerun"):
        update_document(document, {"b": "## B\n"}, "cmd 4")


@pytest.mark.parametrize("name", ["cluttered", "mask_decay"])
def test_every_job_of_the_grid_lands_in_one_row(name: str, tmp_path: Path) -> None:
    """Each setting of the experiment's sweep fills exactly one row, and every row is filled (mask_decay's rows
    tell ``optimizer.mask_weight_decay: null`` from ``0.0``); a cluttered row's command trains that row."""
    table = load_tables()[name]
    jobs = [tuple(o for o in job if not o.startswith("seed=")) for job in sweep_jobs(name)]
    rows = []
    for job in sorted(set(jobs)):
        cfg = compose_config("train", [f"experiment={name}", *job], tmp_path)
        (cell,) = cells_of(table, table_values(cfg, name))
        rows.append(cell[0])
    assert sorted(rows) == list(range(len(table.rows)))
    for i, row in enumerate(table.rows):
        if row.command:
            args = shlex.split(row.command)
            (job,) = {tuple(o for o in j if not o.startswith("seed=")) for j in sweep_jobs(name, *args[4:])}
            cfg = compose_config("train", [*args[3:], *job], tmp_path)
            assert cells_of(table, table_values(cfg, name)) == [(i, 0)], row.label
