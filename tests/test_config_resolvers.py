"""Fast defaults: the per-accelerator precision resolver and channels_last, as the configs and the module use them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import compose_config
from hydra.utils import instantiate

from lightning_modules import ImageClassifier
from lightning_modules.config_resolvers import fast_precision, native_bf16_cpu
from lightning_modules.sweep_folder import picks_from_grid, sweep_name


def test_cpu_precision_is_bf16_mixed_exactly_where_the_cpu_has_bf16() -> None:
    assert fast_precision("cpu") == ("bf16-mixed" if native_bf16_cpu() else "32-true")


def test_gpu_precision_keeps_bf16_mixed_without_a_visible_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("decided by the visible GPU's bf16 support")
    assert fast_precision("gpu") == "bf16-mixed"


def test_unknown_accelerator_is_rejected_with_the_accepted_names() -> None:
    with pytest.raises(ValueError, match="unknown accelerator 'tpu'; accepted: cpu, gpu"):
        fast_precision("tpu")


def test_train_config_resolves_the_fast_defaults(tmp_path: Path) -> None:
    cfg = compose_config("train", ["model=tiny", "data=synthetic"], tmp_path)
    assert cfg.trainer.precision == fast_precision("cpu")
    assert cfg.module.channels_last is True
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    assert trainer.precision == fast_precision("cpu")
    forced = compose_config("train", ["model=tiny", "data=synthetic", "trainer.precision=32-true"], tmp_path)
    assert forced.trainer.precision == "32-true"
    gpu = compose_config("train", ["model=tiny", "data=synthetic", "trainer=gpu"], tmp_path)
    assert gpu.trainer.precision in ("bf16-mixed", "16-mixed")


def test_channels_last_module_computes_what_the_nchw_module_computes() -> None:
    torch.manual_seed(0)
    fast = ImageClassifier("resattn_tiny_cifar", num_classes=4).eval()
    plain = ImageClassifier("resattn_tiny_cifar", num_classes=4, channels_last=False).eval()
    plain.load_state_dict(fast.state_dict())
    weights = [p for p in fast.net.parameters() if p.dim() == 4]
    assert len(weights) > 10
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert all(p.is_contiguous() for p in plain.net.parameters())
    x = torch.randn(2, 3, 20, 24)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)


def test_a_sweep_is_named_after_its_command() -> None:
    exclude = ["trainer.max_epochs", "ckpt_path"]
    name = sweep_name(["seed=0,1,2", "experiment=table1", "trainer.max_epochs=3", "+model.net.x=1"], exclude)
    assert name == "+model.net.x:1+experiment:table1+seed:0_1_2"
    assert sweep_name([], exclude) == "default"
    assert sweep_name(["experiment=cluttered"], exclude) == "experiment:cluttered"


def test_a_command_that_picks_part_of_its_configs_grid_shares_the_grids_folder() -> None:
    grid = {"seed": "0,1,2", "cluttered_row": "attention_arl,attention_nal,resnet,cnn"}
    whole = sweep_name(["experiment=cluttered"], [], grid)
    assert sweep_name(["experiment=cluttered", "cluttered_row=resnet"], [], grid) == whole
    assert sweep_name(["experiment=cluttered", "seed=0,2", "cluttered_row=cnn,resnet"], [], grid) == whole
    assert sweep_name(["experiment=cluttered", "seed=range(0,2)"], [], grid) == whole
    # values the grid does not hold make another sweep, which keeps its own folder
    assert sweep_name(["experiment=cluttered", "seed=3"], [], grid) == "experiment:cluttered+seed:3"
    assert sweep_name(["experiment=cluttered", "seed=1,5"], [], grid) == "experiment:cluttered+seed:1_5"
    assert sweep_name(["cluttered_row=resnet"], [], {}) == "cluttered_row:resnet"
    assert not picks_from_grid("optimizer.lr=interval(0.01,0.1)", {"optimizer.lr": "interval(0.01,0.1)"})
