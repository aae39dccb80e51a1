"""Export a trained network as a timm pretrained tag (see :mod:`resattn.pretrained`):

    python -m analysis.export_weights <run> --tag fmnist [--out resattn/weights]
    python -m analysis.export_weights <run>/checkpoints/<file>.ckpt --tag fmnist

A run directory stands for the best checkpoint of its finished training (recorded in its ``run.json``).

Writes ``<variant>.<tag>.pth`` (the network's weights, float32) and ``<variant>.<tag>.json`` (input size, the mean and
std of the run's training split, class names, network options, test top-1 and the precision it was measured in,
the command that trained it), after which ``timm.create_model("<variant>.<tag>", pretrained=True)`` loads them
offline (set ``RESATTN_WEIGHTS_DIR`` to the folder when it is not the package's own).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from hydra.errors import HydraException

from analysis.run_data import finished_best_checkpoint, load_datamodule, run_directory
from analysis.runs import tested_precision
from lightning_modules.checkpoint_loading import load_classifier
from lightning_modules.run_directory import RunDirectory
from resattn.checkpoints import CheckpointError
from resattn.pretrained import SHIPPED, Weights

TAG = re.compile(r"[a-z0-9_]+")


def _provenance(ckpt: Path) -> tuple[float | None, str | None, str]:
    """The run's stored test top-1 (run.json), the precision it was tested in (recorded, else its last session's) and
    a line saying what trained it."""
    run = run_directory(ckpt)
    if run is None:
        return None, None, f"checkpoint {ckpt.name}"
    metrics = (RunDirectory(run).read_record().get("finished") or {}).get("metrics", {})
    precision = tested_precision(run)
    overrides, hydra = run / ".hydra" / "overrides.yaml", run / ".hydra" / "hydra.yaml"
    command = ""
    if overrides.is_file():
        # a multirun job's own command is a multirun too: it lands in (and resumes or reports) this same directory
        multirun = (
            hydra.is_file() and (yaml.safe_load(hydra.read_text()) or {}).get("hydra", {}).get("mode") == "MULTIRUN"
        )
        words = ["python", "train.py", *(["-m"] if multirun else []), *(yaml.safe_load(overrides.read_text()) or [])]
        command = " ".join(words)
    return metrics.get("test/acc1"), precision, f"{command} ({run.name}/checkpoints/{ckpt.name})".strip()


def export(ckpt: Path, tag: str, out: Path) -> Weights:
    """Write the tag's two files into ``out`` and return its description."""
    if not TAG.fullmatch(tag):
        raise ValueError(f"a tag is lower-case letters, digits and _, got {tag!r}")
    datamodule = load_datamodule(ckpt, None)  # the run's own data: its normalisation and class names
    model = load_classifier(ckpt, num_classes=datamodule.num_classes, in_chans=datamodule.in_chans)
    test_top1, test_precision, source = _provenance(ckpt)
    size = datamodule.image_size
    weights = Weights(
        variant=model.hparams.arch,
        tag=tag,
        file=out / f"{model.hparams.arch}.{tag}.pth",
        num_classes=model.hparams.num_classes,
        input_size=(datamodule.in_chans, size, size),
        mean=tuple(float(m) for m in datamodule.mean),
        std=tuple(float(s) for s in datamodule.std),
        label_names=tuple(datamodule.class_names),
        net=dict(model.hparams.net or {}),
        test_top1=test_top1,
        test_precision=test_precision,
        source=source,
    )
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in model.net.state_dict().items()}, weights.file)
    weights.file.with_suffix(".json").write_text(json.dumps(weights.describe(), indent=2) + "\n")
    return weights


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.export_weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="a finished run directory, or a checkpoint in <run>/checkpoints/")
    parser.add_argument("--tag", required=True, help="the tag, e.g. fmnist: <variant>.<tag>")
    parser.add_argument("--out", default=str(SHIPPED), help=f"folder for the two files (default: {SHIPPED})")
    args = parser.parse_args(argv)
    try:
        ckpt = Path(args.ckpt)
        if ckpt.is_dir():
            ckpt = finished_best_checkpoint(ckpt)
        elif not ckpt.is_file():
            raise FileNotFoundError(f"checkpoint {args.ckpt} does not exist")
        weights = export(ckpt, args.tag, Path(args.out))
    except (ValueError, OSError, CheckpointError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    described = weights.file.with_suffix(".json").name
    print(f"wrote {weights.file} and {described}: timm.create_model({weights.name!r}, pretrained=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
