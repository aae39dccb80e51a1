"""The benchmark: a case measured in a fresh process becomes a CSV row, the Markdown renders from CSV records, and
bad arguments stop with what is accepted (no timing assertions)."""

import csv
import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import records, render
from benchmarks.cases import Case
from benchmarks.run import main, parse_args, record, write_csv
from benchmarks.sections import resattn_default, sharing
from benchmarks.worker import NEIGHBOUR, run_in_process
from datamodules.cpu_cores import default_workers, usable_cores

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "benchmarks" / "results"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_a_quick_case_runs_in_a_fresh_process_and_writes_its_csv_row(tmp_path: Path) -> None:
    args = ["--sections", "models", "--variants", "resattn_tiny_cifar", "--sizes", "16", "--precisions", "32-true"]
    args += ["--formats", "nchw", "--modes", "eager", "--small-batch", "4", "--warmup", "1", "--repeats", "2"]
    args += ["--steps", "1", "--threads", "1", "--out", str(tmp_path), "--no-plot"]
    assert main(args) == tmp_path
    rows = read_csv(tmp_path / "models.csv")
    assert [(r["section"], r["loop"], r["arch"], r["size"], r["batch"], r["error"]) for r in rows] == [
        ("models", "bare", "resattn_tiny_cifar", "16", "4", ""),
        ("models", "eval", "resattn_tiny_cifar", "16", "4", ""),
    ]
    # train and eval interleaved in one process that is not this one; each one's peak memory from its own process
    assert len({r["pid"] for r in rows}) == 1 and rows[0]["pid"] != str(os.getpid())
    for row in rows:
        assert len(row["img_s"].split(";")) == 2 and all(float(v) > 0 for v in row["img_s"].split(";"))
        assert float(row["peak_mib"]) > 0 and float(row["gmacs"]) > 0 and float(row["params_m"]) > 0
        assert 0 <= float(row["others_cpu"]) <= 1 and row["threads"] == "1"
        assert row["command"] == "python -m benchmarks.run " + " ".join(args) and row["date"] and row["cores"]
    report = (tmp_path / "results.md").read_text()
    assert "### Variants: params, GMACs, throughput, peak memory" in report
    assert "| `resattn_tiny_cifar` | 16 | 4 | 32-true/nchw/eager |" in report


def test_a_failing_case_comes_back_as_an_error_row() -> None:
    (row,) = run_in_process([Case("bare", "no_such_network", size=16, batch=2, warmup=0, repeats=1)], threads=1)
    assert "no_such_network" in row["error"] and "img_s" not in row


def test_the_sharing_section_runs_train_py_before_and_after_alone_and_shared() -> None:
    (group,) = sharing(parse_args(["--sections", "sharing", "--device", "cpu"]))
    cores = usable_cores()
    assert [(label, c.cpu_threads, c.neighbour, c.workers) for label, c in group.cases] == [
        (f"before: cpu_threads={cores} fixed", cores, False, default_workers()),
        (f"before: cpu_threads={cores} fixed", cores, True, default_workers()),
        ("after: cpu_threads=null", 0, False, default_workers()),
        ("after: cpu_threads=null", 0, True, default_workers()),
        ("after, data.num_workers=1", 0, True, 1),
    ]
    case = group.cases[0][1]
    assert (case.loop, case.arch, case.data, case.batch, case.steps, case.repeats, case.warmup) == (
        "train.py",
        "tiny",
        "fashion_mnist",
        64,
        60,
        3,
        0,
    )
    assert group.threads == 1 and group.timeout == 3 * 1800.0
    (quick,) = sharing(parse_args(["--quick", "--sections", "sharing", "--device", "cpu"]))
    assert {(c.repeats, c.steps) for _, c in quick.cases} == {(1, 60)}


def _neighbours() -> dict[int, int]:
    """The benchmark's busy neighbours that run now: pid -> session id."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and NEIGHBOUR.encode() in (entry / "cmdline").read_bytes():
                found[int(entry.name)] = os.getsid(int(entry.name))
        except OSError:  # it ended while we looked
            continue
    return found


def test_train_py_beside_a_busy_neighbour_writes_its_csv_row_and_leaves_no_process(tmp_path: Path) -> None:
    case = Case("train.py", "tiny", data="fashion_mnist", batch=16, workers=1, warmup=0, repeats=1, steps=2)
    case = replace(case, neighbour=True)
    seen: dict[int, int] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(_neighbours())
            done.wait(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        (result,) = run_in_process([case], threads=1, timeout=300)
    finally:
        done.set()
        watcher.join()
    assert "error" not in result, result["error"]
    # one neighbour ran, as the leader of a session of its own; none is left
    assert len(seen) == 1 and all(pid == session for pid, session in seen.items())
    assert not _neighbours()
    assert len(result["img_s"]) == 1 and result["img_s"][0] > 0
    assert len(result["others_cpu"]) == 1 and 0 <= result["others_cpu"][0] <= 1  # one share per round
    meta = {"date": "2026-01-02 03:04 UTC", "command": "python -m benchmarks.run --sections sharing", "cpu": "a CPU"}
    meta |= {"cores": "2", "gpu": "none", "versions": "torch x"}
    write_csv(tmp_path / "sharing.csv", [record("sharing", "after", case, result, meta)])
    (row,) = read_csv(tmp_path / "sharing.csv")
    assert (row["loop"], row["neighbour"], row["cpu_threads"], row["peak_mib"], row["error"]) == (
        "train.py",
        "True",
        "0",
        "",
        "",
    )
    text = render.write(tmp_path, plot=False)
    assert "`python train.py model=tiny data=fashion_mnist trainer.max_epochs=1 trainer.limit_train_batches=2 " in text
    wall = 2 * 16 / float(row["img_s"])  # the seconds the CSV holds
    seconds = f"{wall:.{1 if wall < 100 else 0}f}"  # tables show one decimal below 100 (a busy machine goes above)
    assert f"| after | – | – | {seconds} ({seconds}–{seconds}) |" in text


def test_markdown_renders_from_a_csv(tmp_path: Path) -> None:
    meta = {"date": "2026-01-02 03:04 UTC", "command": "python -m benchmarks.run --sections options", "cpu": "a CPU"}
    meta |= {"cores": "2", "gpu": "none", "versions": "torch x"}
    base = Case("lightning", "resattn56_cifar", warmup=3, repeats=2, steps=4)
    rows = [
        record("options", "all off", base, {"img_s": [10.0, 12.0], "others_cpu": 0.5, "threads": 2}, meta),
        record("options", "+ channels_last", replace(base, channels_last=True), {"img_s": [20.0, 22.0]}, meta),
    ]
    write_csv(tmp_path / "options.csv", rows)
    text = render.write(tmp_path, plot=False)
    assert text == (tmp_path / "results.md").read_text()
    assert text.startswith("### Fast options on vs off (the Lightning training path)\n\n")
    assert "Measured by `python -m benchmarks.run --sections options` on 2026-01-02 03:04 UTC: a CPU, 2 logical" in text
    assert "of 2 rounds of 4 step(s) after 3 warm-up step(s)" in text
    assert "| all off | 11.0 (10.0–12.0) | 5818 | 1.00x | 50 % |  |" in text
    assert "| + channels_last | 21.0 (20.0–22.0) | 3048 | 1.91x | – |  |" in text


def test_committed_records_render_into_benchmarks_md(tmp_path: Path) -> None:
    """Every section renders from the committed CSVs into the committed results.md, which is BENCHMARKS.md's
    generated part; the plots draw from them."""
    sections = records.read(COMMITTED)
    assert list(sections) == list(records.TITLES)
    text = render.document(sections)
    assert text == (COMMITTED / "results.md").read_text()
    assert f"{render.DOC_BEGIN}\n\n{text}\n{render.DOC_END}" in (ROOT / "BENCHMARKS.md").read_text()
    records.plot_throughput(sections["compare"] + sections["models"], tmp_path / "throughput.png")
    records.plot_scaling(sections["scaling"], tmp_path / "scaling.png")
    assert (tmp_path / "throughput.png").stat().st_size > 0 and (tmp_path / "scaling.png").stat().st_size > 0


def test_update_doc_replaces_the_results_part_only(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"intro\n{render.DOC_BEGIN}\nold\n{render.DOC_END}\noutro\n")
    render.update_doc(doc, "new tables")
    assert doc.read_text() == f"intro\n{render.DOC_BEGIN}\n\nnew tables\n{render.DOC_END}\noutro\n"
    doc.write_text("no markers")
    with pytest.raises(ValueError, match="lacks the markers"):
        render.update_doc(doc, "x")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sections", "models,nope"], "unknown nope; accepted: compare, models, options, loops, scaling, data"),
        (["--precisions", "fp32"], "unknown fp32; accepted: 32-true, bf16-mixed, 16-mixed"),
        (["--formats", "nhwc"], "unknown nhwc; accepted: nchw, channels_last"),
        (["--threads", "many"], "expected a whole number >= 1, got 'many'"),
        (["--repeats", "0"], "expected a whole number >= 1, got '0'"),
        (["--device", "tpu"], "expected cpu or cuda[:N], got 'tpu'"),
    ],
)
def test_bad_arguments_stop_with_what_is_accepted(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert message in capsys.readouterr().err


def test_render_without_records_and_bad_cases_say_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        render.main([str(tmp_path)])
    assert "holds none of compare.csv, models.csv" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown loop 'train'; accepted: eval, bare"):
        Case("train", "resattn56")
    with pytest.raises(ValueError, match="reads data from dataloader, device, folder"):
        Case("data")
    with pytest.raises(ValueError, match="every other case needs one"):
        Case("bare")
    with pytest.raises(ValueError, match="pytorchcv networks run in the eval and bare loops only"):
        Case("lightning", "resattnet56", library="pytorchcv")
    with pytest.raises(ValueError, match=r"train\.py takes a data config \(.*fashion_mnist.*\), not 'mnist'"):
        Case("train.py", "tiny", data="mnist")
    with pytest.raises(ValueError, match=r"cpu_threads and neighbour are options of the train\.py loop only"):
        Case("bare", "resattn56", neighbour=True)


def test_defaults_come_from_the_training_configs() -> None:
    settings = parse_args(["--device", "cpu", "--quick"])
    assert settings.sections == ("compare", "loops", "data") and settings.batch == 2
    assert settings.out.name == "resattn-benchmarks-quick"  # a quick run leaves the committed records alone
    assert parse_args(["--device", "cpu"]).out == COMMITTED
    assert resattn_default("cpu")[0] in ("32-true", "bf16-mixed")
    assert resattn_default("cuda")[0] in ("bf16-mixed", "16-mixed")  # conf/trainer/gpu.yaml
    assert resattn_default("cpu")[1:] == (True, False)  # conf/module/classifier.yaml: channels_last, no compile
