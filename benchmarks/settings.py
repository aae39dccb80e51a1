"""What a benchmark run measures (:class:`Settings`) and where it writes (:class:`Outputs`).

Every command-line option is declared once, on its field (:func:`option`): its help, its default (which may
depend on ``--quick``, the device and the other options) and how its text is read. :func:`build_parser` makes
the parser from the fields and :func:`parse_args` resolves the defaults in field order.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from omegaconf import OmegaConf

from benchmarks.loops import LOOPS
from benchmarks.measure import MEMORY_FORMATS, MODES, PRECISIONS
from benchmarks.worker import ROOT

Config = tuple[str, str, str]  # (precision, memory format, mode)
PYTORCHCV_DEFAULT: Config = ("fp32", "nchw", "eager")  # what pytorchcv's get_model(...) gives
DESCRIPTION = "Throughput and memory tables for resattn, written as Markdown, CSV and plots."


@dataclass(frozen=True)
class Resolving:
    """What a default may depend on: the options given on the command line and the fields resolved before it."""

    given: Mapping[str, Any]
    values: Mapping[str, Any]

    @property
    def quick(self) -> bool:
        return bool(self.values.get("quick"))

    @property
    def gpu(self) -> bool:
        return self.values.get("device", "cpu") != "cpu"


@dataclass(frozen=True)
class Option:
    """How a field appears on the command line (see :func:`option`)."""

    help: str
    default: Any
    parse: Callable[[str], Any]
    flag: str | None
    finish: Callable[[Any, Resolving], Any] | None
    cli: bool
    keep_empty: bool


def option(
    help: str,
    default: Any,
    *,
    parse: Callable[[str], Any] = str,
    flag: str | None = None,
    finish: Callable[[Any, Resolving], Any] | None = None,
    cli: bool = True,
    keep_empty: bool = False,
) -> Any:
    """A field that is also a command-line option.

    ``default`` is a value or a function of a :class:`Resolving`; a bool default makes a switch (``--name``
    for ``False``, ``flag`` for ``True``). ``parse`` reads the option's text; ``finish`` adjusts or checks the
    value, given or default (a ``ValueError`` becomes a usage error). An empty list given on the command line
    means the default unless ``keep_empty``. ``cli=False``: derived from the other fields, no option.
    """
    return field(metadata={"option": Option(help, default, parse, flag, finish, cli, keep_empty)})


def names(text: str) -> tuple[str, ...]:
    return tuple(v for v in text.split(",") if v)


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v)


def thread_count(text: str) -> int:
    return 0 if text == "auto" else int(text)


def resattn_default(device: str) -> Config:
    """``(precision, memory format, mode)`` that ``python train.py`` uses on ``device``, read from the configs:
    ``conf/trainer/{cpu,gpu}.yaml`` (precision) and ``conf/module/classifier.yaml`` (channels_last, compile)."""
    from lightning_modules.config_resolvers import register_resolvers

    register_resolvers()  # the configs may use the project's resolvers
    trainer = OmegaConf.load(ROOT / "conf" / "trainer" / ("cpu.yaml" if device == "cpu" else "gpu.yaml"))
    module = OmegaConf.load(ROOT / "conf" / "module" / "classifier.yaml")
    lightning_precision = str(trainer.precision)
    precision = {"bf16-mixed": "bf16-mixed", "32-true": "fp32"}.get(lightning_precision)
    if precision is None:
        raise ValueError(
            f"python train.py trains in {lightning_precision!r} on this {device}, which the benchmark does not measure "
            f"(it measures {', '.join(PRECISIONS)}); pass --resattn-default PRECISION/FORMAT/MODE"
        )
    memory_format = "channels_last" if module.channels_last else "nchw"
    return precision, memory_format, "compile" if module.compile else "eager"


def _resattn_default(text: str, known: Resolving) -> Config:
    if text == "conf":
        return resattn_default(known.values["device"])
    config = tuple(text.split("/"))
    if len(config) != 3:
        raise ValueError("--resattn-default takes PRECISION/FORMAT/MODE, e.g. bf16-mixed/channels_last/eager")
    return config


def _known_sections(sections: tuple[str, ...], _: Resolving) -> tuple[str, ...]:
    from benchmarks.sections import get_sections

    get_sections(sections)  # raises for unknown names
    return sections


def _pair(archs: tuple[str, ...], _: Resolving) -> tuple[str, ...]:
    if len(archs) != 2:
        raise ValueError(f"--recipe-archs takes CIFAR_ARCH,IMAGENET_ARCH, got {','.join(archs)!r}")
    return archs


def _all_sections(known: Resolving) -> tuple[str, ...]:
    from benchmarks.sections import SECTIONS

    return ("compare", "loops", "data") if known.quick else tuple(SECTIONS)


def _compare_configs(known: Resolving) -> tuple[Config, ...]:
    """Every precision x format in eager mode; with --quick each library's default and its counterpart only."""
    v = known.values
    configs = [(precision, memory_format, "eager") for precision in v["precisions"] for memory_format in v["formats"]]
    return tuple(c for c in configs if not known.quick or c in (PYTORCHCV_DEFAULT, v["default"]))


@dataclass(frozen=True)
class Settings:
    """Everything a run measures; the fields are the command-line options (``--help``) and two derived values."""

    quick: bool = option("~2-minute subset (batch 2, 2 repeats, fewer cases)", False)
    sections: tuple[str, ...] = option(
        "comma-separated subset of the sections below (default: all; --quick: compare,loops,data)",
        _all_sections,
        parse=names,
        finish=_known_sections,
    )
    device: str = option("cuda where available, else cpu", lambda k: "cuda" if torch.cuda.is_available() else "cpu")
    variants: tuple[str, ...] = option(
        "models section: resattn variants (timm names)",
        lambda k: ("resattn56_cifar",) if k.quick else ("resattn56", "resattn92", "resattn56_cifar", "resattn92_cifar"),
        parse=names,
    )
    sizes: tuple[int, ...] = option("models section: input sizes (default: each variant's native size)", (), parse=ints)
    compare_models: tuple[str, ...] = option(
        "compare section: resattn56,resattn92 (--quick: the first)",
        ("resattn56", "resattn92"),
        parse=names,
        finish=lambda models, k: models[:1] if k.quick else models,
    )
    default: tuple[str, str, str] = option(
        "resattn's default configuration: conf (read conf/trainer and conf/module, default) or P/F/M",
        "conf",
        flag="--resattn-default",
        finish=_resattn_default,
    )
    precisions: tuple[str, ...] = option(f"default: {','.join(PRECISIONS)}", PRECISIONS, parse=names)
    formats: tuple[str, ...] = option(f"default: {','.join(MEMORY_FORMATS)}", MEMORY_FORMATS, parse=names)
    modes: tuple[str, ...] = option(
        f"models section: {','.join(MODES)} (default: eager on a CPU)",
        lambda k: ("eager", "compile") if k.gpu else ("eager",),
        parse=names,
    )
    compare_repeats: int = option(
        "compare section: timed repeats (default 5, --quick 2)",
        lambda k: k.given.get("repeats") or (2 if k.quick else 5),
        parse=int,
    )
    compare_steps: int = option(
        "compare section: steps per repeat (default 2 CPU, 10 GPU)",
        lambda k: k.given.get("steps") or (10 if k.gpu else 1 if k.quick else 2),
        parse=int,
    )
    compile_variants: tuple[str, ...] = option(
        "models section: variants that also get a torch.compile row at resattn's default precision/format when "
        "--modes lacks compile (default on a CPU: the CIFAR Attention-56/92, whose compilation takes about a "
        "minute; none with --quick)",
        lambda k: () if k.quick else ("resattn56_cifar", "resattn92_cifar"),
        parse=names,
        keep_empty=True,
    )
    batch: int = option(
        "batch at >= 128 px (default: 4 on a CPU, 64 on a GPU)",
        lambda k: 64 if k.gpu else 2 if k.quick else 4,
        parse=int,
    )
    small_batch: int = option(
        "batch at CIFAR sizes and in the loop benchmarks (default 64, --quick at most 32)",
        64,
        parse=int,
        finish=lambda batch, k: min(batch, 32) if k.quick else batch,
    )
    warmup: int = option(
        "untimed steps per phase (default 2 CPU, 5 GPU)", lambda k: 5 if k.gpu else 1 if k.quick else 2, parse=int
    )
    repeats: int = option("timed repeats per phase (default 3)", lambda k: 2 if k.quick else 3, parse=int)
    steps: int = option(
        "steps per repeat at >= 128 px (default 1 CPU, 10 GPU)", lambda k: 10 if k.gpu else 1, parse=int
    )
    loop_arch: str = option("network of the options and loops sections", "resattn56_cifar")
    loop_steps: int = option(
        "steps per timed window in options/loops", lambda k: 20 if k.gpu else 3 if k.quick else 4, parse=int
    )
    probe_steps: int = option(
        "loops section: steps per round of the one-layer probe network (0: none)",
        lambda k: 20 if k.quick else 50,
        parse=int,
    )
    loops: tuple[str, ...] = option(
        f"loops section rows: {','.join(LOOPS)} (default: all)",
        lambda k: ("bare", "lightning") if k.quick else LOOPS,
        parse=names,
    )
    scaling_batches: tuple[int, ...] = option(
        "scaling section batch sizes at 224", lambda k: (64, 128, 256) if k.gpu else (1, 2, 4, 8), parse=ints
    )
    scaling_sizes: tuple[int, ...] = option("scaling section input sizes", (32, 64, 128, 224, 320, 448), parse=ints)
    scaling_size_batch: int = option(
        "batch of the input-size sweep (2; GPU 32)", lambda k: 32 if k.gpu else 2, parse=int
    )
    recipe_archs: tuple[str, ...] = option(
        "recipe section: the CIFAR network of the paper's schedule and the ImageNet network",
        ("resattn92_cifar", "resattn56"),
        parse=names,
        finish=_pair,
    )
    threads: int = option(
        "torch threads per measurement; auto (0, the default): the cores other processes leave idle just "
        "before each one",
        0,
        parse=thread_count,
    )
    max_contention: float = option("re-run a case above this others' CPU share", 0.15, parse=float)
    retries: int = option("re-runs of a disturbed case", 1, parse=int)
    timeout: float = option("seconds per case", 1800.0, parse=float)
    compare_configs: tuple[Config, ...] = option(
        "compare section: (precision, format, mode)s", _compare_configs, cli=False
    )
    default_note: str = option(
        "where resattn's default comes from",
        lambda k: "conf/trainer and conf/module" if k.given.get("default", "conf") == "conf" else "--resattn-default",
        cli=False,
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Settings:
        """The settings of :meth:`to_dict` (after a JSON round trip, which turns tuples into lists)."""
        expected = [f.name for f in fields(cls)]
        if missing := [name for name in expected if name not in raw]:
            raise ValueError(f"saved settings lack {missing}")
        return cls(**{name: _tuples(raw[name]) for name in expected})


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class Outputs:
    """Where a run writes, or which saved run it renders (folders as given on the command line)."""

    from_results: str | None = option(
        "measure nothing: render the run saved in this folder (its CSVs and run.json) into results.md and the "
        "plots (and BENCHMARKS.md with --update-doc)",
        None,
    )
    out: str = option(
        "folder of the results (default: benchmarks/results, or the --from-results folder)",
        lambda k: k.values["from_results"] or str(ROOT / "benchmarks" / "results"),
    )
    update_doc: bool = option("also write the tables into BENCHMARKS.md", False)
    plot: bool = option("write no plots", True, flag="--no-plot")


def _flag(f: dataclasses.Field) -> str:
    return f.metadata["option"].flag or "--" + f.name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks.run``, one option per field of :class:`Settings` and
    :class:`Outputs` (absent options stay absent from the namespace: their defaults are resolved later)."""
    from benchmarks.sections import SECTIONS

    epilog = "sections:\n" + "\n".join(f"  {name:<9} {section.title}" for name, section in SECTIONS.items())
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=DESCRIPTION,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for f in (*fields(Settings), *fields(Outputs)):
        opt: Option = f.metadata["option"]
        if not opt.cli:
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": opt.help}
        if isinstance(opt.default, bool):
            kwargs["action"] = "store_false" if opt.default else "store_true"
        else:
            kwargs |= {"type": opt.parse, "metavar": _flag(f).lstrip("-").upper().replace("-", "_")}
        parser.add_argument(_flag(f), **kwargs)
    return parser


def _resolve(cls: type, given: Mapping[str, Any], parser: argparse.ArgumentParser) -> Any:
    """``cls`` from the ``given`` options and, for the others, the defaults of its fields, in field order."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        opt: Option = f.metadata["option"]
        known = Resolving(given, values)
        if f.name in given and (given[f.name] != () or opt.keep_empty):
            value = given[f.name]
        else:
            value = opt.default(known) if callable(opt.default) else opt.default
        try:
            values[f.name] = opt.finish(value, known) if opt.finish else value
        except ValueError as err:
            parser.error(str(err))
    return cls(**values)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings | None, Outputs]:
    """Settings and outputs of a command line; no settings with ``--from-results`` (the saved run has them)."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    outputs = _resolve(Outputs, given, parser)
    if outputs.from_results is None:
        return _resolve(Settings, given, parser), outputs
    if measuring := [_flag(f) for f in fields(Settings) if f.name in given]:
        parser.error(f"--from-results renders the run saved with its settings; drop {', '.join(measuring)}")
    return None, outputs
