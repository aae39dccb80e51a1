"""The results script on hand-written run directories: grouping, mean ± std, paper numbers, missing cells, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from analysis.paired import PairedResult, mcnemar_p
from analysis.predictions import correct_on_test_split
from analysis.results import main
from analysis.table_specs import load_tables
from analysis.tables import results_markdown
from lightning_modules.run_directory import RunDirectory

CIFAR = {
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4},
    "scheduler": {"name": "multistep", "milestones": [0.4, 0.6], "gamma": 0.1, "warmup_steps": 0},
    "trainer": {"max_steps": 160000},
}


def write_run(
    logs: Path, task: str, name: str, config: dict[str, Any], metrics: dict[str, float] | None, step: int = 160000
) -> Path:
    """A run directory as train.py leaves it: .hydra/config.yaml (with an interpolation) and csv/metrics.csv."""
    run = logs / task / "multiruns" / name
    (run / ".hydra").mkdir(parents=True)
    data = {"_target_": "datamodules.CIFAR10DataModule", "num_classes": 10, "image_size": 32, "batch_size": 64}
    net = {"mask_type": "mixed", "mask_structure": "hourglass", "attention_residual": True}
    full = {"task_name": task, "seed": 0, "paths": {"root_dir": "${hydra:runtime.cwd}"}, **CIFAR, "data": data}
    for section, values in config.items():
        full[section] = {**full.get(section, {}), **values}
    options = {k: v for k, v in full.get("model", {}).items() if k != "name"}  # the network's options: model.net
    full["model"] = {"name": full.get("model", {}).get("name"), "net": {**net, **options}}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(full))
    if metrics is not None:
        (run / "csv" / "version_0").mkdir(parents=True)
        header = ["epoch", "step", "val/acc1", *metrics]
        rows = [
            ",".join(header),
            f"0,{step - 1},0.5" + "," * len(metrics),
            ",".join(["0", str(step), ""] + [str(v) for v in metrics.values()]),
        ]
        (run / "csv" / "version_0" / "metrics.csv").write_text("\n".join(rows) + "\n")
    return run


def table3_runs(logs: Path) -> None:
    for seed, acc in enumerate([0.95, 0.94]):
        config = {"model": {"name": "att56", "attention_residual": True, "mask_type": "mixed"}, "seed": seed}
        write_run(logs, "table3", f"arl56-{seed}", {"model": config["model"]}, {"test/acc1": acc})
    write_run(logs, "table3", "nal56", {"model": {"name": "att56", "attention_residual": False}}, {"test/acc1": 0.9})
    write_run(logs, "table3", "nal92-unfinished", {"model": {"name": "att92", "attention_residual": False}}, None)
    write_run(logs, "table3", "other", {"model": {"name": "tiny", "attention_residual": True}}, {"test/acc1": 0.5})


def test_table3_layout_statistics_and_notes(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    table3_runs(logs)
    report = results_markdown("table3", logs)
    lines = report.splitlines()
    assert "| network | ARL ours | ARL paper | NAL ours | NAL paper |" in lines
    assert "| Attention-56 | 5.50 ± 0.71 (n=2) | 5.52 (unverified) | 10.00 (n=1) | 5.89 (unverified) |" in lines
    assert "| Attention-92 | not run yet | 4.99 | unfinished | 5.35 (unverified) |" in lines
    assert "3 finished run(s)" in report and "1 unfinished, 1 outside" in report
    assert "nal92-unfinished" in report and str(logs / "table3" / "multiruns" / "other") in report
    assert "Missing cells: Attention-92 / ARL" in report
    assert "Run: `python train.py -m experiment=table3`" in report
    assert "(unverified) = recalled from the paper" in report
    assert "recipe" not in report  # every run follows the paper's settings


def test_a_resumed_run_reads_its_newest_csv_log(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    run = write_run(logs, "table4", "local", {"model": {"name": "att56", "mask_structure": "local"}}, {}, step=50)
    (run / "csv" / "version_1").mkdir()
    (run / "csv" / "version_1" / "metrics.csv").write_text("step,test/acc1\n160000,0.93\n")
    assert "| local convolutions | 7.00 (n=1) | 6.48 (unverified) |" in results_markdown("table4", logs)


def test_recipe_deviations_and_label_noise_rows(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for noise in (0.1, 0.3, 0.5, 0.7):
        for model, acc in (("resnet164", 0.9), ("att92", 0.92)):
            config = {"model": {"name": model, "mask_type": "mixed", "attention_residual": True}}
            config["data"] = {"label_noise": noise, "batch_size": 128}
            write_run(logs, "table5", f"{model}-{noise}", config, {"test/acc1": acc}, step=1000)
    report = results_markdown("table5", logs)
    assert "| 70% | 10.00 (n=1) | 17.21 | 8.00 (n=1) | 15.75 |" in report
    assert "missing" not in report.split("Paper numbers")[0]
    assert "- `data.batch_size`: 128 in 8 run(s) (paper: 64)" in report
    assert "- steps trained: 1000 in 8 run(s) (paper: 160000)" in report


def test_table7_uses_each_networks_test_size(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    imagenet = {"_target_": "datamodules.ImageNetDataModule", "num_classes": 1000, "image_size": 224}
    config = {"data": imagenet, "scheduler": {"milestones": [200000, 400000, 500000]}, "trainer": {"max_steps": 530000}}
    att56 = write_run(
        logs, "table7", "att56", {**config, "model": {"name": "att56"}}, {"test/acc1": 0.78, "test/acc5": 0.94}, 530000
    )
    att92 = write_run(
        logs, "table7", "att92", {**config, "model": {"name": "att92"}}, {"test/acc1": 0.7, "test/acc5": 0.9}, 530000
    )
    (att56 / "csv" / "version_0" / "hparams.yaml").write_text("model/params_total: 31810000\n")
    evaluation = {
        "checkpoint": str(att92 / "checkpoints" / "best.ckpt"),
        "sizes": {"320": {"test/acc1": 0.8, "test/acc5": 0.95}},
    }
    (logs / "eval" / "runs" / "x").mkdir(parents=True)
    (logs / "eval" / "runs" / "x" / "eval_results.json").write_text(json.dumps(evaluation))
    report = results_markdown("table7", logs)
    assert "| Attention-56 | 224 | 31.81 / 31.9 | 22.00 (n=1) | 21.76 (README) | 6.00 (n=1) | 5.9 (README) |" in report
    assert "| Attention-92 | 320 | ? / 51.3 | 20.00 (n=1) | 19.5 (README) | 5.00 (n=1) | 4.8 |" in report
    assert "| ResNet-152 | 224 | — / 60.2 (unverified) | — | 22.16 (derived) | — | 6.16 (derived) |" in report
    assert "| AttentionInception-56 | 299 | ? / 31.9 (unverified) | not run yet |" in report


def test_bad_inputs_say_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="known tables: table1, table3, table4, table5, table6, table7"):
        results_markdown("table2", tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        results_markdown("table1", tmp_path / "nowhere")
    (tmp_path / "logs").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no runs of table4 found under .*logs.*experiment=table4"):
        results_markdown("table4", tmp_path / "logs")
    assert main(["table9", "--logs", str(tmp_path)]) == 1
    assert "unknown table 'table9'" in capsys.readouterr().err
    table3_runs(tmp_path / "logs")
    output = tmp_path / "results" / "t.md"
    assert main(["all", "--logs", str(tmp_path / "logs"), "--output", str(output)]) == 0
    written = output.read_text()
    assert written.startswith("<!-- Written by `python -m analysis.results all --logs ") and "\n## Table 3" in written
    experiments = Path(__file__).parents[1] / "conf" / "experiment"
    papers = {name for name, table in load_tables().items() if table.has_paper_numbers}
    assert papers == {p.stem for p in experiments.glob("table*.yaml")}


@pytest.mark.slow
def test_a_run_with_only_an_offline_wandb_log(tmp_path: Path) -> None:
    import wandb

    run = tmp_path / "logs" / "table1" / "runs" / "mask:channel"
    config = {"task_name": "table1", "model.net.mask_type": "channel", "model/params_total": 123456}
    wandb.init(mode="offline", dir=run, project="test", config=config)
    wandb.log({"test/acc1": 0.75, "trainer/global_step": 40})
    wandb.finish()
    wandb.teardown()  # waits for the W&B service to write the whole log (finish() alone may return before)
    report = results_markdown("table1", tmp_path / "logs")
    assert "| f2 channel | 25.00 (n=1) | 6.24 (unverified) |" in report
    assert "- steps trained: 40 in 1 run(s) (paper: 160000)" in report


def write_fmnist_run(
    logs: Path, name: str, model: dict[str, Any], acc: float, seed: int = 0, val_best: float | None = None
) -> Path:
    """A finished run of experiment=fmnist: its saved config (synthetic 28 px grayscale data, so that the mask grid
    can be drawn offline), three epochs of CSV curves (with ``val/acc1_best`` when ``val_best`` is given), and a real
    best checkpoint of the tiny network."""
    import torch

    from lightning_modules import ImageClassifier

    run = logs / "fmnist" / "multiruns" / name
    (run / ".hydra").mkdir(parents=True)
    data = {
        "_target_": "datamodules.FashionMNISTDataModule",
        "batch_size": 128,
        "random_erasing": 0.5,
        "val_fraction": 0.1,
        "num_classes": 10,
        "image_size": 28,
    }
    synthetic = {"_target_": "datamodules.SyntheticDataModule", "root": "", "num_classes": 10, "in_chans": 1}
    synthetic |= {"image_size": 28, "model_family": "cifar", "num_train_samples": 40, "num_test_samples": 20}
    optimizer = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
    config = {
        "task_name": "fmnist",
        "seed": seed,
        "paths": {"root_dir": "."},
        "data": data,
        "optimizer": optimizer,
        "scheduler": {"name": "cosine", "warmup_steps": 422},
        "trainer": {"max_epochs": 60},
        "model": {"name": model["name"], "net": {"mask_type": "mixed", "mask_structure": "hourglass", **model["net"]}},
    }
    # the mask grid reads the data the checkpoint's run was trained on: here, synthetic images of Fashion-MNIST's shape
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**config, "data": {**data, **synthetic}}))
    (run / "csv" / "version_0").mkdir(parents=True)
    (run / "csv" / "version_0" / "hparams.yaml").write_text("model/params_total: 1030074\n")
    rows = ["epoch,step,train/loss,train/acc1,val/loss,val/acc1,test/acc1"]
    rows += [f"{e},{(e + 1) * 421},{1.0 / (e + 1)},{0.8 + e / 100},{1.1 / (e + 1)},{0.79 + e / 100}," for e in range(3)]
    if val_best is not None:
        rows = [f"{line},val/acc1_best" if i == 0 else f"{line}," for i, line in enumerate(rows)]
        rows[-1] += str(val_best)
    rows.append(f"3,1263,,,,,{acc}" + ("," if val_best is not None else ""))
    (run / "csv" / "version_0" / "metrics.csv").write_text("\n".join(rows) + "\n")
    (run / "checkpoints").mkdir()
    net = ImageClassifier("resattn_tiny_cifar", num_classes=10, in_chans=1, net=model["net"])
    best = "best-step0001263-acc0.8100.ckpt"
    torch.save({"state_dict": net.state_dict(), "hyper_parameters": dict(net.hparams)}, run / "checkpoints" / best)
    # train.py's record names the best checkpoint where it was trained: this run directory was copied from elsewhere
    length = {"max_epochs": 60, "max_steps": -1}
    RunDirectory(run).mark_finished(length, {"test/acc1": acc}, best_checkpoint=f"/elsewhere/{name}/checkpoints/{best}")
    return run


def test_the_fashion_mnist_document_is_regenerated_from_run_logs(tmp_path: Path) -> None:
    """RESULTS.md's table, curves and mask grid come from the run logs alone, and regenerate identically."""
    logs = tmp_path / "logs"
    for seed, acc in enumerate([0.951, 0.953]):
        write_fmnist_run(logs, f"arl-{seed}", {"name": "att56", "net": {"attention_residual": True}}, acc, seed)
    nal = write_fmnist_run(logs, "nal", {"name": "att56", "net": {"attention_residual": False}}, 0.947)
    RunDirectory(nal).note_config_changes({"trainer.max_epochs": (30, 60)}, step=12630)  # trained longer on resume
    # a stray file named like a better checkpoint is not the one the run recorded, and is never read
    (logs / "fmnist" / "multiruns" / "arl-1" / "checkpoints" / "best-step0009999-acc0.9900.ckpt").write_bytes(b"x")
    document = tmp_path / "RESULTS.md"
    assert main(["fmnist", "--logs", str(logs), "--output", str(document)]) == 0
    text = document.read_text()
    assert text.startswith("<!-- Written by `python -m analysis.results fmnist --logs")
    assert "| network | params M | test top-1 |" in text
    assert "| Attention-56, ARL | 1.03 | 95.20 ± 0.14 (n=2) |" in text
    assert "| Attention-56, NAL | 1.03 | 94.70 (n=1) |" in text
    assert "| pre-activation ResNet-101 | 1.05 | not run yet |" in text  # counted from its command
    assert "- Attention-56, NAL: `python train.py -m experiment=fmnist attention=nal`" in text
    assert "Run: `python train.py -m experiment=fmnist model=resnet101`" in text
    # the recipe is conf/experiment/fmnist.yaml's: the stand-in data is reported as the one difference
    assert "- `data._target_`: 'datamodules.SyntheticDataModule' in 3 run(s) (recipe: 'datamodules.Fashion" in text
    assert f"- {nal}, from step 12630: `trainer.max_epochs`: 30 -> 60" in text  # not like a fresh 60-epoch run
    assert "![learning curves](results/fmnist_curves.png)" in text
    assert "![attention masks of the best network: attention-56, arl](results/fmnist_masks.png)" in text
    # the masks of each attention row's best network: ARL (seed 1 scored higher) and NAL, over all 20 stand-in images
    assert "### What the masks do" in text and "measured on the first 20 test images (all of them)" in text
    measures = text.split("### What the masks do")[1]
    subsections = measures.split("#### ")[1:]
    names = [part.splitlines()[0] for part in subsections]
    assert names == [f"Attention-56, {kind}: `best-step0001263-acc0.8100.ckpt`" for kind in ("ARL", "NAL")]
    assert "Localisation" not in measures  # the synthetic stand-in has no object boxes
    for part, offset in zip(subsections, (1.0, 0.0), strict=True):  # ARL scales the trunk by 1 + M, NAL by M
        rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in part.splitlines() if line.startswith("| ")}
        real = float(rows["real"][0])
        for name in ("mean mask, stage 1, module 1", "mean mask, all", "masks exchanged, all"):
            top1, change, pair, p = rows[name][:4]
            only_real, only_replaced = (int(n) for n in pair.split(" / "))
            assert float(change) == pytest.approx(float(top1) - real, abs=0.006)
            assert float(change) == pytest.approx(100 * (only_replaced - only_real) / 20, abs=0.006)
            assert float(p.removesuffix(" |")) == pytest.approx(mcnemar_p(only_real, only_replaced), rel=1e-2)
        for stage, channels in ((1, 16), (2, 32), (3, 64)):
            shape, logit_std, _, percentiles, scale = rows[f"stage {stage}, module 1"]
            assert shape.startswith(f"{channels}×") and float(logit_std) > 0
            low, high = (float(v) for v in percentiles.split("–"))
            scaled = [float(v) for v in scale.removesuffix(" |").split("–")]
            assert scaled == pytest.approx([offset + low, offset + high], abs=1.5e-3)  # both rounded to 3 decimals
    # the paper's claims: ARL vs NAL paired on seed 0 (the only seed both rows have), the ResNet row not run yet
    (claim,) = [line.split(" | ") for line in text.splitlines() if line.startswith("| attention residual learning")]
    assert claim[2] == "0"
    only_first, only_second = (int(n) for n in claim[4].split(" / "))
    assert float(claim[3]) == pytest.approx(100 * (only_first - only_second) / 20, abs=0.006)  # 20 test images
    assert float(claim[5]) == pytest.approx(mcnemar_p(only_first, only_second), rel=1e-3)
    assert "| Table 6, Attention-92 (1.9 M) vs ResNet-164 (1.7 M) on CIFAR-10: 4.99 vs 5.46 % error | — |" in text
    assert "not yet: no seed with both rows finished |" in text
    for figure in ("fmnist_curves.png", "fmnist_masks.png"):
        assert (tmp_path / "results" / figure).read_bytes()[:4] == b"\x89PNG"
    first = text
    assert main(["fmnist", "--logs", str(logs), "--output", str(document)]) == 0
    assert document.read_text() == first


def test_mcnemar_exact_p_values() -> None:
    """Two-sided exact binomial tail on the disagreements: known values, symmetric, 1 without disagreements."""
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_p(1, 9) == mcnemar_p(9, 1) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_p(5, 5) == mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(540, 460) == pytest.approx(0.0127, abs=5e-4)  # large counts: exact, no overflow
    one_seed = {"seeds": (0,), "images": 10_000, "only_first": 540, "only_second": 460}
    better = PairedResult(**one_seed, first_right=9_500, second_right=9_420)
    assert better.difference == pytest.approx(0.8) and better.verdict == "yes"
    worse = PairedResult(**{**one_seed, "only_first": 460, "only_second": 540}, first_right=9_420, second_right=9_500)
    assert worse.verdict == "no: the reverse holds"
    even = PairedResult(**{**one_seed, "only_first": 10, "only_second": 12}, first_right=9_500, second_right=9_502)
    assert even.verdict.startswith("not distinguishable")


def test_a_damaged_best_checkpoint_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_fmnist_run(tmp_path / "logs", "arl", {"name": "att56", "net": {"attention_residual": True}}, 0.95)
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    best.write_bytes(best.read_bytes()[:1000])
    assert main(["fmnist", "--logs", str(tmp_path / "logs"), "--output", str(tmp_path / "R.md")]) == 1
    assert f"error: cannot read checkpoint {best}" in capsys.readouterr().err


def test_predictions_are_the_networks_own_on_the_runs_test_split(tmp_path: Path) -> None:
    """correct_on_test_split evaluates the recorded checkpoint on its run's own test split, in order."""
    import torch

    from analysis.run_data import finished_best_checkpoint, load_datamodule
    from lightning_modules import ImageClassifier

    run = write_fmnist_run(tmp_path / "logs", "arl", {"name": "att56", "net": {"attention_residual": True}}, 0.95)
    checkpoint = finished_best_checkpoint(run)
    correct = correct_on_test_split(checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    model = ImageClassifier(**state["hyper_parameters"])
    model.load_state_dict(state["state_dict"])
    test_set = load_datamodule(checkpoint, None).test_set
    images = torch.stack([test_set[i][0] for i in range(len(test_set))])
    labels = torch.tensor([test_set[i][1] for i in range(len(test_set))])
    with torch.no_grad():
        expected = model.eval()(images).argmax(dim=1) == labels
    assert correct.dtype == torch.bool and torch.equal(correct, expected)


def test_predictions_are_kept_in_the_run_and_read_back_for_the_same_weights_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The claims' predictions are kept in ``<run>/predictions/``: a later analysis reads them instead of evaluating
    again, other weights are evaluated afresh, and a damaged file is a warning and an evaluation, not an error."""
    import torch

    from analysis.run_data import finished_best_checkpoint

    run = write_fmnist_run(tmp_path / "logs", "arl", {"name": "att56", "net": {"attention_residual": True}}, 0.95)
    checkpoint = finished_best_checkpoint(run)
    correct_on_test_split.cache_clear()
    evaluated = correct_on_test_split(checkpoint)
    (kept,) = (run / "predictions").iterdir()
    assert kept.name.startswith("test-32-true-") and kept.suffix == ".pt"
    content = torch.load(kept, weights_only=True)
    assert content["checkpoint"] == checkpoint.name and torch.equal(content["correct"], evaluated)

    torch.save({**content, "correct": ~evaluated}, kept)  # what a later analysis reads is the kept file
    correct_on_test_split.cache_clear()
    assert torch.equal(correct_on_test_split(checkpoint), ~evaluated)

    trained = checkpoint.read_bytes()
    state = torch.load(checkpoint, weights_only=True)
    first = next(iter(state["state_dict"]))
    state["state_dict"][first] = state["state_dict"][first] + 1
    torch.save(state, checkpoint)
    correct_on_test_split.cache_clear()
    correct_on_test_split(checkpoint)
    assert len(list((run / "predictions").iterdir())) == 2  # other weights: evaluated and kept beside

    kept.write_bytes(b"damaged")
    checkpoint.write_bytes(trained)
    correct_on_test_split.cache_clear()
    with caplog.at_level("WARNING", logger="analysis.predictions"):
        assert torch.equal(correct_on_test_split(checkpoint), evaluated)
    assert f"ignoring the unreadable kept predictions {kept}" in caplog.text
    assert torch.equal(torch.load(kept, weights_only=True)["correct"], evaluated)  # written anew


def test_a_comparison_must_name_rows_of_its_table() -> None:
    from analysis.table_specs import _table

    spec = {"title": "t", "row_header": "r", "columns": [{"label": "c"}], "recipe": [], "rows": [{"label": "A"}]}
    spec["comparisons"] = [{"claim": "A beats B", "first": "A", "second": "B", "paper": "Table 3"}]
    with pytest.raises(ValueError, match="comparison 'A beats B': x has no row 'B'; its rows: A"):
        _table("x", spec)


def test_only_networks_with_attention_modules_have_masks_to_report() -> None:
    """The ResNet rows of a results document share the network class (and its capture_masks) but have no masks:
    they are left out of the mask grid and statistics rather than listed with none."""
    from torch import nn

    from lightning_modules import ImageClassifier
    from lightning_modules.mask_plots import has_attention_modules

    assert has_attention_modules(ImageClassifier("resattn_tiny_cifar", num_classes=10, in_chans=1))
    resnet = ImageClassifier("resattn_resnet164_cifar", num_classes=10, in_chans=1)
    assert hasattr(resnet.net, "capture_masks") and not has_attention_modules(resnet)
    assert not has_attention_modules(nn.Linear(2, 2))


def test_a_rows_drawn_network_is_its_best_on_validation_not_on_test(tmp_path: Path) -> None:
    """The network whose masks a results document draws and measures is chosen as training chose its checkpoint, by
    validation top-1; test top-1 decides only when some run never recorded one."""
    from analysis.figures import row_checkpoint
    from analysis.runs import collect_runs
    from analysis.tables import keys_needed

    table = load_tables()["fmnist"]
    arl = {"name": "att56", "net": {"attention_residual": True}}
    lower_test = write_fmnist_run(tmp_path / "logs", "arl-0", arl, 0.951, seed=0, val_best=0.96)
    write_fmnist_run(tmp_path / "logs", "arl-1", arl, 0.953, seed=1, val_best=0.95)
    _, runs = collect_runs(tmp_path / "logs", "fmnist", keys_needed(table))
    assert {run.metrics["val/acc1_best"] for run in runs} == {0.96, 0.95}
    chosen = row_checkpoint(table, table.rows[0], runs)
    assert chosen is not None and chosen.parent.parent == lower_test
    without_validation = write_fmnist_run(tmp_path / "logs", "arl-2", arl, 0.955, seed=2)
    _, runs = collect_runs(tmp_path / "logs", "fmnist", keys_needed(table))
    chosen = row_checkpoint(table, table.rows[0], runs)
    assert chosen is not None and chosen.parent.parent == without_validation


def test_runs_trained_in_different_precisions_are_listed(tmp_path: Path) -> None:
    """A grid trained over machines with and without native bf16 mixes precisions (``${fast_precision:cpu}``):
    the table's notes say how many runs trained in which, and name the runs resumed in another one."""
    from analysis.runs import collect_runs
    from analysis.tables import keys_needed, precision_note

    table = load_tables()["fmnist"]
    arl = {"name": "att56", "net": {"attention_residual": True}}
    for seed in (0, 1, 2):
        write_fmnist_run(tmp_path / "logs", f"arl-{seed}", arl, 0.95, seed=seed)
    runs_dir = tmp_path / "logs" / "fmnist" / "multiruns"
    for name in ("arl-0", "arl-1"):
        hparams = runs_dir / name / "csv" / "version_0" / "hparams.yaml"
        hparams.write_text(hparams.read_text() + "trainer.precision: bf16-mixed\n")
    resumed = runs_dir / "arl-1" / "csv" / "version_1"
    resumed.mkdir()
    (resumed / "hparams.yaml").write_text("trainer.precision: 32-true\n")
    RunDirectory(runs_dir / "arl-2").note_precision("32-true", 0)  # no CSV record of it: run.json's is read
    _, runs = collect_runs(tmp_path / "logs", "fmnist", keys_needed(table))
    assert [run.precisions for run in runs] == [("bf16-mixed",), ("bf16-mixed", "32-true"), ("32-true",)]
    lines = precision_note(runs)
    assert lines[0].endswith(": 32-true: 1 run(s); bf16-mixed: 1 run(s); bf16-mixed then 32-true: 1 run(s).")
    assert lines[1:] == [f"- {runs_dir / 'arl-1'}: bf16-mixed then 32-true"]
    assert precision_note(runs[:1]) == []  # one precision: nothing to say


def test_claims_recompute_predictions_in_the_precision_the_run_was_tested_in(tmp_path: Path) -> None:
    """A run's saved config may say ``${fast_precision:cpu}``, which resolves per machine: the paired claims use the
    precision it was tested in where it ran (run.json's record, else its CSV log's), not this machine's default."""
    from analysis.predictions import run_precision

    run = write_fmnist_run(tmp_path / "logs", "arl", {"name": "att56", "net": {"attention_residual": True}}, 0.95)
    (checkpoint,) = (run / "checkpoints").glob("best-*.ckpt")
    assert run_precision(checkpoint) == "32-true"  # nothing recorded and no precision in its config
    hparams = run / "csv" / "version_0" / "hparams.yaml"
    hparams.write_text(hparams.read_text() + "trainer.precision: bf16-mixed\n")
    assert run_precision(checkpoint) == "bf16-mixed"
    record = json.loads((run / "run.json").read_text())
    record["finished"]["precision"] = "16-mixed"
    (run / "run.json").write_text(json.dumps(record))
    assert run_precision(checkpoint) == "16-mixed"
