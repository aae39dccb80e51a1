"""Hydra composition of every config group option and every experiment file, with the real configs."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterator
from functools import reduce
from pathlib import Path

import lightning as L
import pytest
import timm
from helpers import CONF, ROOT, compose_config, run_script
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import OmegaConf

import resattn  # noqa: F401  (registers the models)
from datamodules import DataOptions
from datamodules.configs import compose, options

# What a data config leaves to the command line (??? in it): the one thing only the user knows.
MANDATORY = {"folder": {"data.root"}, "streaming": {"data.input_dir"}}

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in {"hydra"})


def test_every_group_has_options() -> None:
    expected = {
        "model": {
            "att56",
            "att92",
            "att128",
            "att164",
            "att236",
            "att452",
            "attnext56",
            "attincep56",
            "resnet164",
            "resnet1001",
            "tiny",
        },
        "mask": {"mixed", "channel", "spatial"},
        "mask_structure": {"hourglass", "local"},
        "attention": {"arl", "nal"},
        "data": {"cifar10", "cifar100", "imagenet", "fashion_mnist", "folder", "synthetic"},
        "optimizer": {"sgd", "adamw"},
        "scheduler": {"paper", "cosine", "none"},
        "trainer": {"cpu", "gpu", "ddp", "ddp_cpu"},
        "logger": {"wandb", "csv", "tensorboard", "none"},
    }
    for group, names in expected.items():
        assert names <= set(options(group)), group


@pytest.mark.parametrize("data", options("data"))
def test_each_data_config_composes_to_the_options_of_its_class(data: str, tmp_path: Path) -> None:
    """Every option of the datamodule, no more, whether the data config gives it or its base does."""
    cfg = compose_config("train", [f"data={data}"], tmp_path).data
    assert set(cfg) - {"_target_"} == get_class(cfg._target_).option_names()
    assert set(OmegaConf.missing_keys(cfg)) == MANDATORY.get(data, set())
    assert (CONF / "data" / f"{data}.yaml").read_text().count("\ndefaults:\n  - /_bases/data@_here_\n  - _self_\n") == 1


def test_the_common_data_options_are_dataoptions_defaults() -> None:
    """``conf/_bases/data.yaml`` and ``DataOptions`` name the same options with the same defaults; what has no
    default in Python is ??? (each data config must give it)."""
    common = OmegaConf.load(CONF / "_bases" / "data.yaml")
    assert list(common) == ["_target_", *(field.name for field in dataclasses.fields(DataOptions))]
    for field in dataclasses.fields(DataOptions):
        if field.default is dataclasses.MISSING:
            assert OmegaConf.is_missing(common, field.name), field.name
        else:
            assert common[field.name] == field.default, field.name


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("data", ["cifar10", "cifar100", "fashion_mnist", "imagenet", "synthetic"])
def test_model_follows_the_data(model: str, data: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"model={model}", f"data={data}"], tmp_path)
    family = cfg.data.model_family
    if family not in cfg.model.archs:
        with pytest.raises(Exception, match=family):
            OmegaConf.to_container(cfg.module, resolve=True)
        return
    module = OmegaConf.to_container(cfg.module, resolve=True)
    assert timm.is_model(module["arch"])
    assert module["arch"].endswith("_cifar") == (family == "cifar")
    assert module["num_classes"] == cfg.data.num_classes
    assert module["in_chans"] == cfg.data.in_chans


def test_cifar100_picks_the_cifar_twin_and_100_classes(tmp_path: Path) -> None:
    cfg = compose_config("train", ["model=att56", "data=cifar100"], tmp_path)
    assert cfg.module.arch == "resattn56_cifar"
    assert cfg.module.num_classes == 100


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("mask=channel", "mask_type", "channel"),
        ("mask=spatial", "mask_type", "spatial"),
        ("mask_structure=local", "mask_structure", "local"),
        ("attention=nal", "attention_residual", False),
    ],
)
def test_mask_and_attention_groups_reach_the_network(override: str, key: str, value: object, tmp_path: Path) -> None:
    cfg = compose_config("train", ["model=tiny", override], tmp_path)
    assert cfg.module.net[key] == value
    module = instantiate(cfg.module)
    attention = next(m for _, m in module.net.attention_modules())
    actual = {
        "mask_type": attention.mask.activation.mask_type,
        "mask_structure": "local" if type(attention.mask.body).__name__ == "LocalMask" else "hourglass",
        "attention_residual": attention.attention_residual,
    }[key]
    assert actual == value


def leaves(node: object, keys: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    """``(keys, value)`` of every leaf of a plain nested dict (a list is a leaf)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*keys, key))
    else:
        yield keys, node


@pytest.mark.parametrize("group", ["optimizer", "scheduler", "trainer", "logger", "callbacks", "debug"])
def test_group_options_compose_and_instantiate(group: str, tmp_path: Path) -> None:
    """Each option resolves, its file's own values land where its package puts them (the group, or the top for
    ``# @package _global_``), and its loggers, callbacks and CPU trainers instantiate into Lightning's types."""
    for option in options(group):
        cfg = compose_config("train", [f"{group}={option}", "model=tiny"], tmp_path)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        path = CONF / group / f"{option}.yaml"
        own = OmegaConf.to_container(OmegaConf.load(path))
        own.pop("defaults", None)
        placed = resolved if path.read_text().startswith("# @package _global_") else resolved[group]
        for keys, value in leaves(own):
            if not (isinstance(value, str) and "${" in value):  # interpolations are resolved against the whole config
                assert reduce(operator.getitem, keys, placed) == value, f"{group}={option}: {'.'.join(keys)}"
        if group in {"logger", "callbacks"}:
            kind = Logger if group == "logger" else L.Callback
            entries = [instantiate(entry) for entry in (cfg.get(group) or {}).values()]
            assert all(isinstance(entry, kind) for entry in entries), f"{group}={option}: {entries}"
        if group == "trainer" and option in {"cpu", "ddp_cpu"}:
            assert isinstance(instantiate(cfg.trainer, logger=False), L.Trainer)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(experiment: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert timm.is_model(resolved["module"]["arch"])


def test_optuna_search_and_slurm_launcher_compose(tmp_path: Path) -> None:
    cfg = compose(["hparams_search=optuna", "hydra/launcher=slurm"], hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.direction == "maximize"
    assert cfg.optimized_metric == "val/acc1_best"
    assert "submitit" in cfg.hydra.launcher._target_
    assert cfg.hydra.launcher.tasks_per_node == cfg.trainer.devices


def test_unknown_option_lists_the_choices(tmp_path: Path) -> None:
    proc = run_script("train.py", "model=att57", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "Could not find 'model/att57'" in proc.stderr
    assert "att56" in proc.stderr and "att92" in proc.stderr  # Hydra lists the available options


def test_train_yaml_defaults_are_documented_in_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for group in [
        "model",
        "mask",
        "mask_structure",
        "attention",
        "data",
        "optimizer",
        "scheduler",
        "trainer",
        "logger",
    ]:
        for option in options(group):
            assert option in readme, f"{group}={option} is not mentioned in README.md"
