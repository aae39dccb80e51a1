"""The benchmark entry point in its quickest form (tables, CSVs, run.json and the plot are written; no timing
assertions), rendering a saved run again, the section registry and the command line."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.document import DOC_BEGIN, DOC_END, load, render, update_benchmarks_md
from benchmarks.measure import Case, PhaseResult, Result
from benchmarks.plot import plot_throughput
from benchmarks.run import main
from benchmarks.sections import SECTIONS, get_sections
from benchmarks.settings import Settings, parse_args, resattn_default

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_quick_run_writes_tables_csvs_and_plot(tmp_path: Path) -> None:
    args = ["--quick", "--sections", "models,loops,data,recipe", "--variants", "resattn_tiny_cifar", "--sizes", "16"]
    args += ["--recipe-archs", "resattn_tiny_cifar,resattn_tiny", "--batch", "1"]
    args += ["--precisions", "fp32", "--formats", "nchw,channels_last", "--loop-arch", "resattn_tiny_cifar"]
    args += ["--small-batch", "8", "--repeats", "2", "--loop-steps", "1", "--probe-steps", "2"]
    args += ["--loops", "bare,lightning", "--retries", "0", "--threads", "1", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p.name for p in tmp_path.iterdir()} == {
        "results.md",
        "run.json",
        "models.csv",
        "loops.csv",
        "data.csv",
        "recipe.csv",
        "throughput.png",
    }

    models = read_csv(tmp_path / "models.csv")
    assert [(r["memory_format"], r["error"]) for r in models] == [("nchw", ""), ("channels_last", "")]
    for column in ("params_m", "gmacs", "train_img_s_median", "eval_img_s_median", "train_peak_mem_mib"):
        assert all(float(r[column]) > 0 for r in models), column
    assert all(len(r["train_img_s_repeats"].split(";")) == 2 for r in models)
    assert {"train_spread_pct", "eval_peak_mem_mib", "train_contention", "load_before", "threads"} <= set(models[0])

    loops = read_csv(tmp_path / "loops.csv")
    network = [("bare", "dataloader"), ("lightning", "dataloader"), ("bare", "device"), ("lightning", "device")]
    probe = [("bare", "device"), ("lightning", "device"), ("bare", "dataloader"), ("lightning", "dataloader")]
    expected = [("resattn_tiny_cifar", *row) for row in network] + [("linear-probe", *row) for row in probe]
    assert [(r["arch"], r["loop"], r["data"]) for r in loops] == expected
    assert all(float(r["step_ms"]) > 0 and not r["error"] for r in loops)
    assert {r["pipeline"].split(":")[0] for r in read_csv(tmp_path / "data.csv")} >= {"GPU-resident"}

    report = (tmp_path / "results.md").read_text()
    for title in ("Variants: params, GMACs", "Lightning training loop vs a bare PyTorch loop", "Data pipelines"):
        assert title in report
    assert "| variant | input | batch | precision/format/mode | params (M) | GMACs/img | train img/s |" in report
    assert "Lightning loop overhead vs bare PyTorch" in report  # the goals table
    recipe = read_csv(tmp_path / "recipe.csv")
    assert [(r["arch"], r["batch"], r["data"]) for r in recipe[:2]] == [
        ("resattn_tiny_cifar", "64", "dataloader"),
        ("resattn_tiny_cifar", "64", "device"),
    ]
    assert recipe[2]["model"] == "resattn_tiny" and float(recipe[2]["train_img_s_median"]) > 0
    assert "| paper CIFAR recipe of resattn_tiny_cifar (160k steps at batch 64) ≤ 10 min on one H100" in report
    assert "GPU goal: not applicable on a CPU" in report
    assert "torch threads | 1 (--threads)" in report
    assert "### Goals\n" in report and "issue" not in report.lower()

    # the saved run renders into the same document without measuring
    again = main(["--from-results", str(tmp_path), "--out", str(tmp_path / "again"), "--no-plot"])
    assert (again / "results.md").read_text() == report
    assert (again / "models.csv").read_text() == (tmp_path / "models.csv").read_text()


def test_plot_and_doc_update(tmp_path: Path) -> None:
    case = Case("resattn", "resattn_tiny_cifar", 32, 8)
    result = Result(
        case, 0.07, 0.008, {"train": PhaseResult([10.0, 12.0], 100.0, 0.5), "eval": PhaseResult([30.0], None, 0.1)}
    )
    assert plot_throughput([result], tmp_path / "plot.png") == tmp_path / "plot.png"
    assert (tmp_path / "plot.png").stat().st_size > 0
    assert plot_throughput([Result(case, 0.0, None, error="boom")], tmp_path / "none.png") is None

    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"intro\n{DOC_BEGIN}\nold\n{DOC_END}\noutro\n")
    update_benchmarks_md(doc, "new tables")
    assert doc.read_text() == f"intro\n{DOC_BEGIN}\n\nnew tables\n{DOC_END}\noutro\n"
    doc.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        update_benchmarks_md(doc, "x")


def test_committed_results_render_into_benchmarks_md() -> None:
    """Every registered section renders from the rows of the committed CSVs; the result is the committed
    results.md, which is also BENCHMARKS.md's generated part."""
    run = load(COMMITTED)
    assert list(run.results) == list(SECTIONS), "the committed run should cover every registered section"
    for name, result in run.results.items():
        text = result.markdown(run.settings)
        assert "\n|---|" in text, name  # a Markdown table
        assert all(goal.goal and goal.measured and goal.verdict for goal in result.goals(run.settings)), name
    document = render(run)
    assert document == (COMMITTED / "results.md").read_text()
    assert f"{DOC_BEGIN}\n\n{document}\n{DOC_END}" in (ROOT / "BENCHMARKS.md").read_text()
    assert "issue" not in document.lower()


def test_settings_survive_the_saved_run(tmp_path: Path) -> None:
    settings = parse_args(["--device", "cpu", "--quick"])[0]
    assert settings is not None
    assert Settings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    with pytest.raises(ValueError, match="lack"):
        Settings.from_dict({"device": "cpu"})
    with pytest.raises(FileNotFoundError, match=r"run\.json is missing"):
        load(tmp_path)


def test_unknown_sections_are_refused_with_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert [section.name for section in get_sections(["data", "compare"])] == ["data", "compare"]
    with pytest.raises(ValueError, match="unknown sections \\['nope'\\]; known: compare, models, options"):
        get_sections(["models", "nope"])
    with pytest.raises(SystemExit):
        parse_args(["--sections", "models,nope"])
    assert "known: " + ", ".join(SECTIONS) in capsys.readouterr().err


def test_from_results_takes_no_measurement_options(capsys: pytest.CaptureFixture[str]) -> None:
    settings, outputs = parse_args(["--from-results", "saved", "--update-doc"])
    assert settings is None and outputs.out == "saved" and outputs.update_doc and outputs.plot
    with pytest.raises(SystemExit):
        parse_args(["--from-results", "saved", "--repeats", "5"])
    assert "drop --repeats" in capsys.readouterr().err


def test_resattn_default_reads_the_training_configs() -> None:
    for device in ("cpu", "cuda"):
        precision, memory_format, mode = resattn_default(device)
        assert precision in ("fp32", "bf16-mixed") and memory_format in ("nchw", "channels_last")
        assert mode in ("eager", "compile")
    assert resattn_default("cuda")[0] == "bf16-mixed"  # conf/trainer/gpu.yaml


def test_cpu_defaults_add_compile_rows_for_the_cifar_networks_only() -> None:
    settings = parse_args(["--device", "cpu"])[0]
    assert settings is not None and settings.modes == ("eager",)
    assert settings.compile_variants == ("resattn56_cifar", "resattn92_cifar")
    for argv in (["--device", "cpu", "--quick"], ["--device", "cpu", "--compile-variants", ""]):
        assert getattr(parse_args(argv)[0], "compile_variants", None) == ()
    with pytest.raises(SystemExit):
        parse_args(["--recipe-archs", "resattn92_cifar"])


def test_resattn_default_refuses_a_precision_it_cannot_measure(monkeypatch: pytest.MonkeyPatch) -> None:
    import lightning_modules.config_resolvers as precision

    monkeypatch.setattr(precision, "native_bf16_gpu", lambda: False)  # a pre-Ampere GPU: 16-mixed
    with pytest.raises(ValueError, match=r"trains in '16-mixed' on this cuda.*--resattn-default"):
        resattn_default("cuda")
