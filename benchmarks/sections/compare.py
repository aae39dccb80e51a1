"""``compare``: ImageNet Attention-56/92 at 224 against pytorchcv's ``resattnet56``/``resattnet92``, every
precision x memory format in eager mode, each library as its users run it by default, and at its best format."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from benchmarks.measure import Result
from benchmarks.report import fmt_rate, fmt_ratio, markdown_table, result_from_row, result_row
from benchmarks.runner import Runner
from benchmarks.sections.base import (
    NOISE,
    Goal,
    Section,
    SectionResult,
    fmt_mem,
    parity,
    phase,
    ratio,
    spread,
    verdict,
)
from benchmarks.settings import PYTORCHCV_DEFAULT, Config, Settings

PYTORCHCV_NAMES = {"resattn56": "resattnet56", "resattn92": "resattnet92"}
SIZE, SMALL_SIZE = 224, 64  # pytorchcv runs at 224 only; one step at 64 shows that
DEFAULT_SPEEDUP_GOAL = {"cpu": 1.5, "gpu": 3.0}  # resattn's default training path / pytorchcv's default
HEADER = [
    "model",
    "precision/format",
    "resattn train img/s",
    "pytorchcv train img/s",
    "train ratio",
    "resattn eval img/s",
    "pytorchcv eval img/s",
    "eval ratio",
    "resattn train peak MiB",
    "pytorchcv train peak MiB",
    "memory ratio",
]
Pair = tuple[Result, Result]  # (resattn, pytorchcv) in one configuration


def measure(runner: Runner) -> CompareResult:
    s = runner.settings
    rows = []
    for index, model in enumerate(s.compare_models):
        # the first model in every configuration; the others in fp32 (default vs default, best format each)
        configs = s.compare_configs if index == 0 else [c for c in s.compare_configs if "fp32" in c or c == s.default]
        cases = [
            replace(runner.model_case(library, name, SIZE, config), repeats=s.compare_repeats, steps=s.compare_steps)
            for config in configs
            for library, name in (("resattn", model), ("pytorchcv", PYTORCHCV_NAMES[model]))
        ]
        runner.together(cases)  # all configurations of both libraries interleaved
        rows += [result_row(runner.full(case)) for case in cases]
    first = s.compare_models[0]
    small_cases = [
        replace(runner.model_case(library, name, SMALL_SIZE, PYTORCHCV_DEFAULT), batch=s.batch, steps=1, repeats=1)
        for library, name in (("pytorchcv", PYTORCHCV_NAMES[first]), ("resattn", first))
    ]
    small, ours_small = (runner.full(case) for case in small_cases)
    return CompareResult.measured([*rows, result_row(ours_small), result_row(small)])


def _cells(ours: Result, theirs: Result, emphasis: str = "") -> list[str]:
    """img/s of both libraries and their ratio for train and eval, then training peak memory and its ratio."""
    cells = []
    for name in ("train", "eval"):
        a, b = phase(ours, name), phase(theirs, name)
        cells += [fmt_rate(a[0]), fmt_rate(b[0]), f"{emphasis}{fmt_ratio(ratio(a[1], b[1]))}{emphasis}"]
    memory = phase(ours, "train")[2], phase(theirs, "train")[2]
    return [*cells, fmt_mem(memory[0]), fmt_mem(memory[1]), fmt_ratio(ratio(*memory))]


@dataclass
class CompareResult(SectionResult):
    """Rows: resattn then pytorchcv per configuration and model at 224, then both at 64 (resattn first)."""

    pairs: dict[str, dict[Config, Pair]] = field(init=False, repr=False)  # by resattn model, then configuration
    small: dict[str, Result] = field(init=False, repr=False)  # by library

    def __post_init__(self) -> None:
        results = [result_from_row(row) for row in self.rows]
        at_size = [r for r in results if r.case.size == SIZE]
        self.pairs = {}
        for ours, theirs in zip(at_size[::2], at_size[1::2], strict=True):
            config = (ours.case.precision, ours.case.memory_format, ours.case.mode)
            self.pairs.setdefault(ours.case.model, {})[config] = (ours, theirs)
        self.small = {r.case.library: r for r in results if r.case.size != SIZE}

    @staticmethod
    def _defaults(configs: dict[Config, Pair], default: Config) -> Pair | None:
        """resattn at its default against pytorchcv at its default, where both were measured."""
        if default in configs and PYTORCHCV_DEFAULT in configs:
            return configs[default][0], configs[PYTORCHCV_DEFAULT][1]
        return None

    def _headline(self, model: str, configs: dict[Config, Pair], default: Config) -> list[list[str]]:
        """Rows for "default vs default" and, per precision, "best format vs best format"."""
        rows = []
        if defaults := self._defaults(configs, default):
            label = f"**resattn default ({'/'.join(default[:2])}) vs pytorchcv default (fp32/nchw)**"
            rows.append([f"**{model}**", label, *_cells(*defaults, emphasis="**")])
        for precision in dict.fromkeys(c[0] for c in configs):
            at_precision = [pair for config, pair in configs.items() if config[0] == precision]
            ours, theirs = (
                max(
                    (pair[i] for pair in at_precision if pair[i].phases.get("train")),
                    key=lambda r: r.phases["train"].median,
                    default=None,
                )
                for i in (0, 1)
            )
            if ours is not None and theirs is not None and len(at_precision) > 1:  # several formats to choose from
                formats = f"resattn {ours.case.memory_format}, pytorchcv {theirs.case.memory_format}"
                rows.append([model, f"best format at {precision}: {formats}", *_cells(ours, theirs)])
        return rows

    def markdown(self, settings: Settings) -> str:
        s = settings
        defaults = (("resattn default", s.default), ("pytorchcv default", PYTORCHCV_DEFAULT))
        rows = []
        for model, configs in self.pairs.items():
            for config, pair in configs.items():
                tags = [tag for tag, default in defaults if default == config]
                label = "/".join(config[:2]) + (f" ({', '.join(tags)})" if tags else "")
                rows.append([model, label, *_cells(*pair)])
            rows += self._headline(model, configs, s.default)
        # the threads of each model's process (its first configuration's resattn row)
        first = {model: next(iter(configs.values()))[0] for model, configs in self.pairs.items()}
        threads = ", ".join(f"{model} {result.threads}" for model, result in first.items())
        ours_small, small = self.small["resattn"], self.small["pytorchcv"]
        memory = "peak RSS of the process" if s.device == "cpu" else "CUDA max allocated"
        note = (
            f"Eager mode, batch {s.batch}, {SIZE}x{SIZE}, {s.device}; img/s as median (min–max) of "
            f"{s.compare_repeats} repeats of {s.compare_steps} step(s) after {s.warmup} warm-up step(s), all "
            f"configurations of a model in one process with interleaved repeats (torch threads: {threads}); peak "
            f"memory = {memory} during training, measured in a fresh process per case. "
            f"resattn's default = `python train.py` on this device ({'/'.join(s.default)}, from {s.default_note}); "
            "pytorchcv's default = what `get_model(...)` gives (fp32/nchw/eager). "
            f"Below {SIZE} pytorchcv does not run: at {SMALL_SIZE}x{SMALL_SIZE} `{small.case.model}` fails with "
            f"`{small.error or 'no error'}` (fixed 7x7 average pool and x2 up-sampling by scale factor), while "
            f"resattn's `{ours_small.case.model}` trains at {fmt_rate(phase(ours_small, 'train')[0])} img/s "
            f"(batch {ours_small.case.batch}); see the models table for resattn's CIFAR variants."
        )
        return note + "\n\n" + markdown_table(HEADER, rows)

    def goals(self, settings: Settings) -> list[Goal]:
        """resattn at least as fast and as lean as pytorchcv in every configuration (within the noise), and its
        default training path a set factor faster than pytorchcv's default."""
        goals = []
        target = DEFAULT_SPEEDUP_GOAL["cpu" if settings.device == "cpu" else "gpu"]
        for model, configs in self.pairs.items():
            for config, (ours, theirs) in configs.items():
                at = "/".join(config[:2])
                for name in ("train", "eval"):
                    value = ratio(phase(ours, name)[1], phase(theirs, name)[1])
                    noise = max(NOISE, 0.5 * math.hypot(spread(ours, name), spread(theirs, name)))
                    goal = f"{model} {name} img/s at {at}: resattn ≥ pytorchcv"
                    goals.append(Goal(goal, fmt_ratio(value), parity(value, noise)))
                value = ratio(phase(ours, "train")[2], phase(theirs, "train")[2])
                goal = f"{model} train peak memory at {at}: resattn ≤ pytorchcv"
                goals.append(Goal(goal, fmt_ratio(value), parity(None if value is None else 1 / value, NOISE)))
            if defaults := self._defaults(configs, settings.default):
                value = ratio(phase(defaults[0], "train")[1], phase(defaults[1], "train")[1])
                goal = f"{model} default training path: resattn / pytorchcv ≥ {target}x on {settings.device}"
                goals.append(Goal(goal, fmt_ratio(value), verdict(None if value is None else value >= target)))
        return goals

    def figures(self) -> dict[str, list[Result]]:
        return {"throughput": [r for configs in self.pairs.values() for pair in configs.values() for r in pair]}


SECTION = Section("compare", "resattn vs pytorchcv (ImageNet Attention-56/92, 224x224)", measure, CompareResult)
