"""``python -m benchmarks.run``: measure the benchmark's sections, one CSV record per section, and render them.

Every section is a list of groups of cases (:class:`~benchmarks.worker.Case`); each group runs in a fresh process
with its cases' rounds interleaved, so the ratios inside a group survive changes in the machine's load. Where a
group holds several cases, the peak memory of each one that a table shows comes from a process of its own.
Before each process ``--threads auto`` counts the cores other processes leave idle. Every row records the
case, its img/s per round, peak memory, other processes' CPU share, and the command, date and machine; the
Markdown and the plots are rendered from these records (:mod:`benchmarks.render`).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import lightning
import timm
import torch
from omegaconf import OmegaConf

from benchmarks import render
from benchmarks.worker import PRECISIONS, PROBE, ROOT, Case, Contention, run_in_process
from datamodules.cpu_cores import default_workers, usable_cores
from lightning_modules.config_resolvers import register_resolvers
from resattn import get_variant

COLUMNS = ["section", "label", *(f.name for f in fields(Case))]
COLUMNS += ["threads", "img_s", "peak_mib", "warmup_s", "others_cpu", "params_m", "gmacs", "pid", "error"]
COLUMNS += ["date", "command", "cpu", "cores", "gpu", "versions"]
FORMATS = ("nchw", "channels_last")
MODES = ("eager", "compile")
ALL_VARIANTS = ("resattn56", "resattn92", "resattn56_cifar", "resattn92_cifar")
COMPILE_ON_CPU = ("resattn56_cifar", "resattn92_cifar")  # compiling an ImageNet network takes minutes on a CPU
PYTORCHCV_DEFAULT = ("32-true", False)  # what pytorchcv's get_model(...) gives: fp32, NCHW (and eager)


@dataclass
class Group:
    """Cases measured in one process, each with its row label; ``memory``: the loops whose peak memory is measured
    in a process of their own; ``threads``: torch threads, whatever ``--threads`` says; ``timeout``: seconds for
    the process, whatever ``--timeout`` says."""

    cases: list[tuple[str, Case]]
    memory: tuple[str, ...] = ()
    threads: int | None = None
    timeout: float | None = None


@dataclass
class Settings:
    """The parsed command line (its options read as attributes), with the defaults that depend on ``--quick`` and
    the device filled in, and resattn's default configuration."""

    args: argparse.Namespace
    default: tuple[str, bool, bool] = field(init=False)  # resattn's (precision, channels_last, compile)

    def __post_init__(self) -> None:
        self.default = resattn_default(self.device)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.args, name)

    @property
    def gpu(self) -> bool:
        return self.device != "cpu"

    @property
    def at_default(self) -> dict[str, Any]:
        """The Case fields of resattn's default precision and memory format."""
        return {"precision": self.default[0], "channels_last": self.default[1]}

    def case(self, loop: str, arch: str = "", **fields: Any) -> Case:
        return Case(loop, arch, **{"device": self.device, **fields})

    def timing(self, warmup: int, repeats: int, steps: int) -> dict[str, int]:
        """A section's warm-up, repeats and steps: ``--warmup/--repeats/--steps`` where given, else these (with
        ``--quick`` 2 repeats of half the steps)."""
        if self.quick:
            repeats, steps = 2, max(1, steps // 2)
        given = {"warmup": self.args.warmup, "repeats": self.args.repeats, "steps": self.args.steps}
        chosen = {"warmup": warmup, "repeats": repeats, "steps": steps}
        return {key: chosen[key] if value is None else value for key, value in given.items()}


def resattn_default(device: str) -> tuple[str, bool, bool]:
    """``(precision, channels_last, compile)`` that ``python train.py`` uses on ``device``, read from
    ``conf/trainer/{cpu,gpu}.yaml`` and ``conf/module/classifier.yaml``."""
    register_resolvers()
    trainer = OmegaConf.load(ROOT / "conf" / "trainer" / ("cpu.yaml" if device == "cpu" else "gpu.yaml"))
    module = OmegaConf.load(ROOT / "conf" / "module" / "classifier.yaml")
    return str(trainer.precision), bool(module.channels_last), bool(module.compile)


def compare(s: Settings) -> list[Group]:
    """ImageNet Attention-56/92 at 224 against pytorchcv's twins: train and eval of every precision x format of
    both libraries in one process per network (the second network: fp32 and resattn's default only)."""
    timing = s.timing(warmup=5 if s.gpu else 2, repeats=5, steps=10 if s.gpu else 2)
    twins = {ours: theirs for theirs, ours in render.TWINS.items()}
    models = ("resattn56",) if s.quick else ("resattn56", "resattn92")
    defaults = {"resattn": s.default[:2], "pytorchcv": PYTORCHCV_DEFAULT}
    groups = []
    for index, model in enumerate(models):
        configs = [(p, f == "channels_last") for p in s.precisions for f in s.formats]
        if s.quick or index > 0:
            configs = [
                c for c in configs if c in defaults.values() or (index > 0 and not s.quick and c[0] == "32-true")
            ]
        cases = [
            (
                f"{library} default" if config == defaults[library] else "",
                s.case(
                    loop,
                    arch,
                    library=library,
                    **{"size": 224, "batch": s.batch, "precision": config[0], "channels_last": config[1], **timing},
                ),
            )
            for config in configs
            for library, arch in (("resattn", model), ("pytorchcv", twins[model]))
            for loop in ("bare", "eval")
        ]
        groups.append(Group(cases, memory=("bare",)))
    once = {"warmup": 1, "repeats": 1, "steps": 1}
    for library, arch in (("resattn", models[0]), ("pytorchcv", twins[models[0]])):
        groups.append(Group([("below 224", s.case("bare", arch, library=library, size=64, batch=s.batch, **once))]))
    return groups


def models(s: Settings) -> list[Group]:
    """Every variant x size x precision x format x mode, train and eval, one process per network and size."""
    variants = s.variants or (("resattn56_cifar",) if s.quick else ALL_VARIANTS)
    modes = s.modes or (MODES if s.gpu else ("eager",))
    groups = []
    for variant in variants:
        for size in s.sizes or (get_variant(variant).input_size[-1],):
            large = size >= 128
            timing = s.timing(warmup=5 if s.gpu else 2, repeats=3, steps=10 if s.gpu else 1 if large else 3)
            configs = [
                (p, f == "channels_last", m == "compile") for m in modes for p in s.precisions for f in s.formats
            ]
            if variant in COMPILE_ON_CPU and not (s.gpu or s.quick or (*s.default[:2], True) in configs):
                configs.append((*s.default[:2], True))
            fields = {"size": size, "batch": s.batch if large else s.small_batch, **timing}
            cases = [
                ("", s.case(loop, variant, precision=p, channels_last=cl, compile=c, **fields))
                for p, cl, c in configs
                for loop in ("bare", "eval")
            ]
            groups.append(Group(cases, memory=("bare", "eval")))
    return groups


OPTIONS = (  # row label, the fields that differ from all off
    ("all off (32-true, NCHW, eager, DataLoader)", {}),
    ("+ channels_last", {"channels_last": True}),
    ("+ bf16-mixed", {"precision": "bf16-mixed"}),
    ("+ torch.compile", {"compile": True}),
    ("+ GPU-resident data", {"data": "device"}),
    ("all on", {"channels_last": True, "precision": "bf16-mixed", "compile": True, "data": "device"}),
    ("all on but compile", {"channels_last": True, "precision": "bf16-mixed", "data": "device"}),
)


def options(s: Settings) -> list[Group]:
    """The Lightning training path with each fast option alone, all off and all on, interleaved."""
    base = s.case("lightning", s.loop_arch, batch=s.small_batch, data="dataloader", **_loop_timing(s))
    return [Group([(label, replace(base, **change)) for label, change in OPTIONS])]


LOOP_ROWS = (  # loop, data, row label
    ("bare", "dataloader", "bare PyTorch loop (forward, loss, backward, SGD step, zero_grad)"),
    ("bare+metrics", "dataloader", "bare + ImageClassifier's per-step metric updates and non-finite flag"),
    ("lightning-minimal", "dataloader", "Lightning, training_step returns the loss only"),
    ("lightning", "dataloader", "Lightning + ImageClassifier, as train.py runs it"),
    ("bare", "device", "bare PyTorch loop, GPU-resident data"),
    ("lightning", "device", "Lightning + ImageClassifier, GPU-resident data"),
)
PROBE_ROWS = (
    ("bare", "device", "bare PyTorch loop, GPU-resident data"),
    ("lightning-minimal", "device", "Lightning, training_step returns the loss only"),
    ("lightning", "device", "Lightning + ImageClassifier"),
    ("bare", "dataloader", "bare PyTorch loop, DataLoader"),
    ("lightning-minimal", "dataloader", "Lightning, training_step returns the loss only, DataLoader"),
    ("lightning", "dataloader", "Lightning + ImageClassifier, DataLoader"),
)


def _loop_timing(s: Settings) -> dict[str, int]:
    return s.timing(warmup=3, repeats=3, steps=20 if s.gpu else 4)


def loops(s: Settings) -> list[Group]:
    """Lightning against a bare loop on the same network, data and batch, and on the one-layer probe: all in one
    process."""
    network = s.case("bare", s.loop_arch, batch=s.small_batch, **_loop_timing(s))
    probe = replace(network, arch=PROBE, **s.timing(warmup=10, repeats=3, steps=50))
    wanted = ("bare", "lightning") if s.quick else tuple(row[0] for row in LOOP_ROWS)
    return [
        Group(
            [
                (label, replace(template, loop=loop, data=data))
                for template, rows in ((network, LOOP_ROWS), (probe, PROBE_ROWS))
                for loop, data, label in rows
                if loop in wanted
            ]
        )
    ]


def scaling(s: Settings) -> list[Group]:
    """Attention-56 at resattn's default against batch size (at 224) and input size: every case alone."""
    timing = s.timing(warmup=5 if s.gpu else 2, repeats=3, steps=10 if s.gpu else 1)
    grid = [(b, 224) for b in ((64, 128, 256) if s.gpu else (1, 2, 4, 8))]
    grid += [(32 if s.gpu else 2, size) for size in (32, 64, 128, 224, 320, 448)]
    return [
        Group([("", s.case(loop, "resattn56", size=size, batch=batch, **s.at_default, **timing))])
        for batch, size in grid
        for loop in ("bare", "eval")
    ]


def data(s: Settings) -> list[Group]:
    """CIFAR-10's training batches from the datamodule's DataLoader (no workers and train.py's default) and from
    the GPU-resident path, each alone, without a network."""
    fields = {"batch": s.small_batch, **s.timing(warmup=1, repeats=3, steps=20)}
    loader = "torchvision transforms.v2 in the datamodule's DataLoader, num_workers="
    cases = [
        (f"{loader}{n}", Case("data", data="dataloader", workers=n, **fields)) for n in {0: 0, default_workers(): 0}
    ]
    label = "GPU-resident: batched crop/flip on the device (data.gpu_resident=true)"
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cases += [(label, Case("data", data="device", device=device, **fields)) for device in devices]
    return [Group([case]) for case in cases]


FORMATS_ROWS = (
    ("ImageFolder + PIL", "folder"),
    ("Hugging Face datasets (save_to_disk) + PIL", "hf"),
    ("litdata shards + PIL", "streaming"),
    ("litdata shards + nvJPEG on the GPU", "gpu-decode"),
)


def formats(s: Settings) -> list[Group]:
    """The ImageNet training path from each storage format, alone, one torch thread: one core's img/s."""
    fields = {"batch": s.small_batch, **s.timing(warmup=1, repeats=3, steps=4)}
    rows = FORMATS_ROWS if torch.cuda.is_available() else FORMATS_ROWS[:-1]
    device = {"gpu-decode": "cuda"}
    return [
        Group([(label, Case("data", data=name, device=device.get(name, "cpu"), **fields))], threads=1)
        for label, name in rows
    ]


def recipe(s: Settings) -> list[Group]:
    """The paper's CIFAR Attention-92 schedule through the real training path at resattn's default (both data
    paths interleaved), and ImageNet Attention-56 training at resattn's default, alone."""
    base = s.case("lightning", "resattn92_cifar", batch=64, compile=s.default[2], **s.at_default, **_loop_timing(s))
    timing = s.timing(warmup=5 if s.gpu else 2, repeats=3, steps=10 if s.gpu else 1)
    imagenet = s.case("bare", "resattn56", size=224, batch=s.batch, **s.at_default, **timing)
    paths = [("DataLoader (default)", "dataloader"), ("data.gpu_resident=true", "device")]
    return [
        Group([(label, replace(base, data=data)) for label, data in paths]),
        Group([("ImageNet network", imagenet)]),
    ]


def sharing(s: Settings) -> list[Group]:
    """A short training (tiny network, Fashion-MNIST, 60 batches) end to end, alone and beside one busy process,
    with torch's default thread count fixed (before) and with the threads following the free cores (after, the
    default), plus the latter beside it with one DataLoader worker: in one process, interleaved; ``--quick``: one
    round. The process may take ``--timeout`` seconds per round."""
    timing = s.timing(warmup=0, repeats=3, steps=60)
    if s.quick:
        timing |= {"repeats": s.args.repeats or 1, "steps": s.args.steps or 60}
    batch = OmegaConf.load(ROOT / "conf" / "data" / "fashion_mnist.yaml").batch_size
    base = Case("train.py", "tiny", data="fashion_mnist", batch=batch, workers=default_workers(), **timing)
    variants = [(f"before: cpu_threads={usable_cores()} fixed", usable_cores()), ("after: cpu_threads=null", 0)]
    cases = [
        (label, replace(base, cpu_threads=threads, neighbour=neighbour))
        for label, threads in variants
        for neighbour in (False, True)
    ]
    cases.append(("after, data.num_workers=1", replace(base, workers=1, neighbour=True)))
    return [Group(cases, threads=1, timeout=s.timeout * timing["repeats"])]


SECTIONS: dict[str, Callable[[Settings], list[Group]]] = {
    "compare": compare,
    "models": models,
    "options": options,
    "loops": loops,
    "scaling": scaling,
    "data": data,
    "formats": formats,
    "recipe": recipe,
    "sharing": sharing,
}
QUICK_SECTIONS = ("compare", "loops", "data")


def idle_cores() -> int:
    """The cores other processes leave idle right now (sampled for one second), at least one."""
    cores, meter = os.cpu_count() or 1, Contention()
    time.sleep(1.0)
    return max(1, cores - round((meter.others() or 0.0) * cores))


class Runner:
    """Runs groups in fresh processes (an identical group only once) and prints what each one took."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.done: dict[tuple[Case, ...], list[dict[str, Any]]] = {}

    def process(self, cases: Sequence[Case], threads: int | None, timeout: float | None = None) -> list[dict[str, Any]]:
        key = tuple(cases)
        if key not in self.done:
            s = self.settings
            if threads is None:
                threads = s.threads if s.threads or s.gpu else idle_cores()
            start = time.perf_counter()
            self.done[key] = run_in_process(cases, threads, timeout or s.timeout)
            first = self.done[key][0]
            note = (
                first.get("error") or f"{first['threads']} threads, others' CPU {render.fmt_pct(first['others_cpu'])}"
            )
            what = ", ".join(sorted({f"{c.loop} {c.arch or c.data}" for c in cases}))
            print(f"  {len(cases)} case(s) ({what[:90]}): {time.perf_counter() - start:.0f} s, {note}", flush=True)
        return self.done[key]

    def group(self, group: Group) -> list[dict[str, Any]]:
        """The group's result rows, with the peak memory of ``group.memory``'s loops from processes of their own."""
        cases = [case for _, case in group.cases]
        results = [dict(r) for r in self.process(cases, group.threads, group.timeout)]
        if len(cases) > 1:
            for case, result in zip(cases, results, strict=True):
                if case.loop in group.memory and not result.get("error"):
                    alone = self.process([replace(case, warmup=1, repeats=1)], group.threads)[0]
                    result["peak_mib"] = alone.get("peak_mib")
        return results


def machine(device: str) -> dict[str, str]:
    """Where and with what the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        pytorchcv = version("pytorchcv")
    except PackageNotFoundError:
        pytorchcv = "not installed"
    gpu = torch.cuda.get_device_name(torch.device(device)) if device != "cpu" else "none"
    versions = f"python {platform.python_version()}, torch {torch.__version__}, timm {timm.__version__}, "
    versions += f"lightning {lightning.__version__}, pytorchcv {pytorchcv}"
    return {
        "cpu": f"{cpu}, {torch.backends.cpu.get_cpu_capability()}",
        "cores": str(os.cpu_count()),
        "gpu": gpu,
        "versions": versions,
    }


def _text(value: Any, digits: int) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(f"{v:.{digits}f}" for v in value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def record(section: str, label: str, case: Case, result: dict[str, Any], meta: dict[str, str]) -> dict[str, str]:
    """One CSV row: the case, what was measured (rounded) and where."""
    digits = {"img_s": 3, "peak_mib": 1, "warmup_s": 2, "others_cpu": 3, "params_m": 3, "gmacs": 3}
    measured = {key: _text(result.get(key), digits.get(key, 0)) for key in COLUMNS if key in result or key == "error"}
    return (
        {key: str(value) for key, value in {"section": section, "label": label, **asdict(case)}.items()}
        | measured
        | meta
    )


def write_csv(path: Path, rows: Sequence[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _names(accepted: Sequence[str] | None = None) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        values = tuple(v for v in text.split(",") if v)
        if accepted is not None and (unknown := [v for v in values if v not in accepted]):
            raise argparse.ArgumentTypeError(f"unknown {', '.join(unknown)}; accepted: {', '.join(accepted)}")
        return values

    return parse


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return int(text)

    return parse


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(_count(1)(v) for v in text.split(",") if v)


def _threads(text: str) -> int:
    return 0 if text == "auto" else _count(1)(text)


def _device(text: str) -> str:
    if text != "cpu" and not text.startswith("cuda"):
        raise argparse.ArgumentTypeError(f"expected cpu or cuda[:N], got {text!r}")
    return text


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Throughput and memory of resattn: one CSV record per section, Markdown and plots from them.",
        epilog="sections: " + ", ".join(SECTIONS) + " (BENCHMARKS.md says what each measures)",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help=f"a few minutes: {','.join(QUICK_SECTIONS)}, fewer cases and repeats")
    add("--sections", type=_names(tuple(SECTIONS)), help="comma-separated (default: all; --quick: its three)")
    add("--device", type=_device, default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda[:N]")
    add("--variants", type=_names(), help="models section: timm names (default: Attention-56/92, ImageNet and CIFAR)")
    add("--sizes", type=_sizes, default=(), help="models section: input sizes (default: each variant's own)")
    add(
        "--precisions",
        type=_names(tuple(PRECISIONS)),
        default=("32-true", "bf16-mixed"),
        help="default: 32-true,bf16-mixed",
    )
    add("--formats", type=_names(FORMATS), default=FORMATS, help="memory formats: nchw,channels_last")
    add(
        "--modes",
        type=_names(MODES),
        help="models section: eager,compile (default: both on a GPU; on a CPU eager, "
        f"plus one compile row at resattn's default for {', '.join(COMPILE_ON_CPU)})",
    )
    add("--batch", type=_count(1), help="batch at >= 128 px (default 4 on a CPU, 64 on a GPU, 2 with --quick)")
    add(
        "--small-batch", type=_count(1), help="batch at CIFAR sizes, of the loops and the data (default 64, --quick 32)"
    )
    add("--warmup", type=_count(0), help="untimed steps per case (default: per section)")
    add("--repeats", type=_count(1), help="timed rounds per case (default 3; compare 5; --quick 2)")
    add("--steps", type=_count(1), help="steps per round (default: per section and device)")
    add("--loop-arch", default="resattn56_cifar", help="network of the options and loops sections")
    add("--threads", type=_threads, default=0, help="torch threads per process; auto (default): the idle cores")
    add("--timeout", type=float, default=1800.0, help="seconds per process (sharing: per round)")
    add("--out", type=Path, help="folder of the CSVs (default benchmarks/results; --quick: a temporary folder)")
    add("--update-doc", action="store_true", help="also write the rendered tables into BENCHMARKS.md")
    add("--no-plot", action="store_true", help="write no plots")
    args = parser.parse_args(argv)
    args.sections = args.sections or (QUICK_SECTIONS if args.quick else tuple(SECTIONS))
    args.batch = args.batch or (64 if args.device != "cpu" else 2 if args.quick else 4)
    args.small_batch = args.small_batch or (32 if args.quick else 64)
    quick_out = Path(tempfile.gettempdir()) / "resattn-benchmarks-quick"
    args.out = args.out or (quick_out if args.quick else ROOT / "benchmarks" / "results")
    return Settings(args)


def main(argv: Sequence[str] | None = None) -> Path:
    """Measure the sections, write ``<out>/<section>.csv`` after each, then render the folder."""
    s = parse_args(argv)
    command = "python -m benchmarks.run " + shlex.join(sys.argv[1:] if argv is None else argv)
    started, runner = time.perf_counter(), Runner(s)
    for section in s.sections:
        print(f"[{section}] {render.TITLES[section]}", flush=True)
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command}
        meta |= machine(s.device)
        rows = []
        for group in SECTIONS[section](s):
            results = runner.group(group)
            rows += [
                record(section, label, case, r, meta) for (label, case), r in zip(group.cases, results, strict=True)
            ]
        write_csv(s.out / f"{section}.csv", rows)
    render.write(s.out, plot=not s.no_plot, update=s.update_doc)
    print(f"wrote {s.out} ({(time.perf_counter() - started) / 60:.1f} min)", flush=True)
    return s.out


if __name__ == "__main__":
    main()
