"""ImageClassifier, optimiser/scheduler builders and safe checkpoint loading, with a real Trainer."""

from __future__ import annotations

import bisect
import collections
import math
import pickle
from pathlib import Path

import lightning as L
import pytest
import timm
import torch
from helpers import compose_config, quiet_trainer
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils.data import DataLoader, TensorDataset

import resattn  # noqa: F401  (registers the variants with timm)
from lightning_modules import ImageClassifier, NonFiniteLossError
from lightning_modules.callbacks import LastCheckpoint
from lightning_modules.checkpoint_loading import load_classifier
from lightning_modules.optim import build_optimizer, build_scheduler
from resattn.checkpoints import CheckpointError, read_checkpoint

SGD = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}


def loaders(n: int = 32, num_classes: int = 4, size: int = 16, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.randn(n, 3, size, size, generator=g) * 0.1 + y.view(-1, 1, 1, 1).float()
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=8, shuffle=True, generator=g), DataLoader(data, batch_size=8)


def tiny_classifier(**kw) -> ImageClassifier:
    return ImageClassifier("resattn_tiny_cifar", num_classes=4, **{"optimizer": SGD, **kw})


def test_fit_logs_metric_names_and_best(tmp_path: Path) -> None:
    train, val = loaders()
    model = tiny_classifier()
    t = quiet_trainer(tmp_path, max_epochs=2)
    t.fit(model, train, val)
    names = set(t.callback_metrics)
    for stage in ("train", "val"):
        assert {f"{stage}/loss", f"{stage}/acc1", f"{stage}/acc5"} <= names
    assert "val/acc1_best" in names
    assert t.callback_metrics["val/acc1_best"] >= t.callback_metrics["val/acc1"] - 1e-6
    t.test(model, val)
    assert {"test/loss", "test/acc1", "test/acc5"} <= set(t.callback_metrics)
    per_class = model.test_per_class.compute()
    assert per_class.shape == (4,)
    assert model.test_confusion.compute().sum() == 32


def test_top5_with_fewer_than_five_classes_is_one() -> None:
    model = ImageClassifier("resattn_tiny_cifar", num_classes=3)
    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    model.metrics["val_acc"].update(logits, target)
    assert model.metrics["val_acc"].compute()["val/acc5"] == 1.0


def test_the_net_options_reach_the_network_unchanged() -> None:
    """Network options and VariantSpec fields travel in one mapping to timm.create_model."""
    model = ImageClassifier(
        "resattn_tiny_cifar",
        num_classes=7,
        in_chans=1,
        net={"mask_type": "spatial", "attention_residual": False, "num_trunk_units": 1},
    )
    modules = [m for _, m in model.net.attention_modules()]
    assert all(not m.attention_residual and m.mask.activation.mask_type == "spatial" for m in modules)
    assert all(len(m.trunk) == 1 for m in modules)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_unknown_arch_lists_variants() -> None:
    with pytest.raises(ValueError, match="resattn56_cifar"):
        ImageClassifier("resattn57", num_classes=10)


def test_checkpoint_reloads_without_hydra(tmp_path: Path) -> None:
    train, val = loaders()
    model = tiny_classifier(net={"mask_type": "channel"})
    t = quiet_trainer(tmp_path)
    t.fit(model, train, val)
    path = tmp_path / "model.ckpt"
    t.save_checkpoint(path)
    restored = ImageClassifier.load_from_checkpoint(path, weights_only=True)
    assert restored.hparams.optimizer == SGD
    assert restored.hparams.net == {"mask_type": "channel"}
    x = torch.randn(2, 3, 16, 16)
    model.eval(), restored.eval()
    torch.testing.assert_close(model(x), restored(x))
    assert load_classifier(path, num_classes=4).hparams.arch == "resattn_tiny_cifar"


def test_checkpoint_errors(tmp_path: Path) -> None:
    train, val = loaders()
    model = tiny_classifier()
    t = quiet_trainer(tmp_path, max_steps=1)
    t.fit(model, train, val)
    good = tmp_path / "good.ckpt"
    t.save_checkpoint(good)

    with pytest.raises(CheckpointError, match="trained for 4 classes but the data has 10"):
        load_classifier(good, num_classes=10)
    with pytest.raises(CheckpointError, match=r"architecture 'resattn_tiny_cifar'.*'resattn56'"):
        load_classifier(good, arch="resattn56")
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        read_checkpoint(tmp_path / "missing.ckpt")

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(truncated)

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Exploit()}, evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(pickle.UnpicklingError):
        ImageClassifier.load_from_checkpoint(evil, weights_only=True)


def test_nan_loss_stops_before_any_checkpoint_holds_its_weights(tmp_path: Path) -> None:
    _, val = loaders()
    model = tiny_classifier(optimizer={"name": "sgd", "lr": 0.1})
    x = torch.randn(24, 3, 16, 16)
    x[12:16] = float("nan")  # the fourth batch of four: global step 3
    bad = DataLoader(TensorDataset(x, torch.arange(24) % 4), batch_size=4)
    last = LastCheckpoint(str(tmp_path / "ckpt"), every_n_train_steps=1)
    fit = quiet_trainer(tmp_path, callbacks=[last], log_every_n_steps=50, enable_checkpointing=True)
    with pytest.raises(NonFiniteLossError, match="not finite at global step 3 \\(found at step 4\\)"):
        fit.fit(model, bad, val)
    saved = read_checkpoint(last.path)
    assert saved["global_step"] == 3
    weights = {k: v for k, v in saved["state_dict"].items() if k.startswith("net.") and v.is_floating_point()}
    assert len(weights) > 10 and all(v.isfinite().all() for v in weights.values())
    assert sorted(p.name for p in last.dirpath.iterdir()) == ["last.ckpt"]  # no partial file of step 4


def test_last_checkpoint_is_written_right_after_optimizer_steps_only(tmp_path: Path) -> None:
    """With gradient accumulation the gradients of a step's first micro-batches are in no checkpoint, so last.ckpt
    is written only after the step's last one, also in a resumed run (whose first micro-batch sits at a step that
    is a multiple of every_n_train_steps)."""
    train, val = loaders()  # 4 micro-batches per epoch: 2 steps of 2
    last = LastCheckpoint(str(tmp_path / "ckpt"), every_n_train_steps=1)
    written: list[tuple[int, int]] = []

    class SeeLastCheckpoint(Callback):
        def on_train_batch_start(self, *args: object) -> None:
            if last.path.is_file():
                ckpt = torch.load(last.path, weights_only=True)
                micro_batches = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"]
                written.append((ckpt["global_step"], micro_batches))

    for epochs in (1, 2):  # the second fit resumes the first
        trainer = quiet_trainer(
            tmp_path,
            callbacks=[SeeLastCheckpoint(), last],
            accumulate_grad_batches=2,
            max_epochs=epochs,
            enable_checkpointing=True,
        )
        trainer.fit(tiny_classifier(), train, val, ckpt_path=last.path if epochs == 2 else None, weights_only=True)
    assert written and all(micro_batches == 2 * step for step, micro_batches in written), written
    assert torch.load(last.path, weights_only=True)["global_step"] == 4


def test_nan_loss_is_found_on_logging_steps_without_checkpoints(tmp_path: Path) -> None:
    _, val = loaders()
    x = torch.full((24, 3, 16, 16), float("inf"))
    bad = DataLoader(TensorDataset(x, torch.arange(24) % 4), batch_size=4)
    with pytest.raises(NonFiniteLossError, match="not finite at global step 0 \\(found at step 1\\)"):
        quiet_trainer(tmp_path, log_every_n_steps=2).fit(tiny_classifier(), bad, val)


def test_optimizer_settings() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    sgd = build_optimizer(net, SGD)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.param_groups[0]["weight_decay"] == 1e-4
    adamw = build_optimizer(
        net, {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "no_weight_decay_on_norm_and_bias": True}
    )
    decays = sorted((g["weight_decay"], len(g["params"])) for g in adamw.param_groups)
    assert decays == [(0.0, 3), (0.05, 1)]
    with pytest.raises(ValueError, match="accepted: \\['adam', 'adamw', 'sgd'\\]"):
        build_optimizer(net, {"name": "lamb"})


def test_mask_branches_can_have_their_own_weight_decay() -> None:
    net = timm.create_model("resattn_tiny_cifar", num_classes=10)
    mask_ids = {id(p) for name, p in net.named_parameters() if ".mask." in name}
    assert mask_ids and len(mask_ids) < len(list(net.parameters()))
    plain = build_optimizer(net, {**SGD, "mask_weight_decay": None})
    assert [g["weight_decay"] for g in plain.param_groups] == [1e-4]  # the paper's: one decay for all
    free = build_optimizer(net, {**SGD, "mask_weight_decay": 0})
    assert [g["weight_decay"] for g in free.param_groups] == [1e-4, 0.0]
    assert {id(p) for p in free.param_groups[1]["params"]} == mask_ids
    adamw = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "no_weight_decay_on_norm_and_bias": True}
    split = build_optimizer(net, {**adamw, "mask_weight_decay": 0.5})
    decay, no_decay, masks = split.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"], masks["weight_decay"]) == (0.05, 0.0, 0.5)
    mask_weights = {id(p) for n, p in net.named_parameters() if ".mask." in n and p.ndim > 1}
    assert {id(p) for p in masks["params"]} == mask_weights  # the masks' norms and biases go without decay
    assert all(p.ndim <= 1 for p in no_decay["params"]) and all(id(p) not in mask_ids for p in decay["params"])
    resnet = timm.create_model("resattn_resnet101_cifar")  # no mask branch: the option changes nothing
    groups = build_optimizer(resnet, {**SGD, "mask_weight_decay": 0}).param_groups
    assert [(g["weight_decay"], len(g["params"])) for g in groups] == [(1e-4, len(list(resnet.parameters())))]


def lrs(settings: dict, steps: int, total: int = 100, per_epoch: int = 10) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_scheduler(opt, settings, lambda: (total, per_epoch))["scheduler"]
    values = []
    for _ in range(steps):
        values.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return values


def test_paper_multistep_schedule_counts_iterations() -> None:
    values = lrs({"name": "multistep", "interval": "step", "milestones": [4, 6], "gamma": 0.1}, 8)
    assert values == pytest.approx([0.1] * 4 + [0.01] * 2 + [0.001] * 2)


def test_milestones_as_fractions_follow_the_run_and_the_warm_up_ramps() -> None:
    settings = {"name": "multistep", "milestones": [0.4, 0.6], "warmup_steps": 3}
    values = lrs(settings, 10, total=10)
    assert values == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001])
    assert lrs(settings, 300, total=300)[119:122] == pytest.approx([0.1, 0.01, 0.01])  # 0.4 of 300 steps
    assert lrs({"name": "multistep", "milestones": [0.5], "interval": "epoch"}, 6, total=60, per_epoch=10)[2:4] == (
        pytest.approx([0.1, 0.01])  # 0.5 of 6 epochs
    )


@pytest.mark.parametrize("table", ["table1", "table3", "table4", "table5", "table6", "table7"])
def test_paper_experiments_keep_the_papers_learning_rate_at_every_step(table: str, tmp_path: Path) -> None:
    """The composed experiment's schedule against the paper's (lr 0.1, /10 at absolute iterations: docs/paper.md §5.1,
    §5.3) at every one of the run's steps."""
    cfg = compose_config("train", [f"experiment={table}"], tmp_path)
    total = cfg.trainer.max_steps
    paper = [200000, 400000, 500000] if table == "table7" else [64000, 96000]
    settings = OmegaConf.to_container(cfg.scheduler, resolve=True)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optimizer.lr)
    factor = build_scheduler(optimizer, settings, lambda: (total, 1000))["scheduler"].lr_lambdas[0]
    differ = [
        step
        for step in range(total)
        if not math.isclose(cfg.optimizer.lr * factor(step), 0.1 * 0.1 ** bisect.bisect_right(paper, step))
    ]
    assert not differ, f"{len(differ)} steps differ from the paper's schedule, the first at step {differ[0]}"


def test_cosine_with_warmup() -> None:
    values = lrs({"name": "cosine", "interval": "step", "warmup_steps": 5}, 100)
    assert values[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    assert values[5] == pytest.approx(0.1)
    assert values[52] == pytest.approx(0.05 * (1 + math.cos(math.pi * 47 / 95)))
    assert values[-1] < 1e-3


def test_scheduler_errors() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert build_scheduler(opt, {"name": "none"}, lambda: (10, 1)) is None
    with pytest.raises(ValueError, match="accepted: \\['multistep', 'cosine', 'none'\\]"):
        build_scheduler(opt, {"name": "onecycle"}, lambda: (10, 1))
    with pytest.raises(ValueError, match=r"unexpected settings.*'milestone'"):
        build_scheduler(opt, {"name": "multistep", "milestones": [1], "milestone": 3}, lambda: (10, 1))
    with pytest.raises(ValueError, match=r"scheduler.milestones: 1.5 is neither a fraction of the run"):
        build_scheduler(opt, {"name": "multistep", "milestones": [0.4, 1.5]}, lambda: (10, 1))
    with pytest.raises(ValueError, match=r"scheduler.warmup_steps=0.1: give a whole number of steps >= 0"):
        build_scheduler(opt, {"name": "cosine", "warmup_steps": 0.1}, lambda: (10, 1))


def test_mixup_and_ema_are_trained_and_evaluated_separately(tmp_path: Path) -> None:
    train, val = loaders()
    model = tiny_classifier(mixup={"mixup_alpha": 0.4, "cutmix_alpha": 1.0}, ema_decay=0.5)
    assert type(model.criterion).__name__ == "SoftTargetCrossEntropy"
    t = quiet_trainer(tmp_path, max_epochs=1)
    t.fit(model, train, val)
    names = set(t.callback_metrics)
    assert {"val/ema_loss", "val/ema_acc1", "val/ema_acc5", "val/acc1"} <= names
    ema = dict(model.ema.module.named_parameters())
    changed = [n for n, p in model.net.named_parameters() if not torch.equal(p, ema[n])]
    assert changed  # the average lags behind the trained weights
    t.test(model, val)
    assert {"test/ema_acc1", "test/acc1"} <= set(t.callback_metrics)
    path = tmp_path / "ema.ckpt"
    t.save_checkpoint(path)
    restored = ImageClassifier.load_from_checkpoint(path, weights_only=True)
    torch.testing.assert_close(dict(restored.ema.module.named_parameters()), ema)


def test_mixup_is_off_by_default_and_rejects_unknown_settings() -> None:
    assert tiny_classifier(mixup={"mixup_alpha": 0.0, "cutmix_alpha": 0.0}).mixup is None
    with pytest.raises(ValueError, match=r"unknown mixup settings \['alpha'\]"):
        tiny_classifier(mixup={"alpha": 0.2})


def test_readme_recipe_loads_a_training_checkpoint_into_timm(tmp_path: Path) -> None:
    import timm

    model = ImageClassifier("resattn_tiny_cifar", num_classes=10, in_chans=1).eval()
    ckpt_path = tmp_path / "last.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt_path)
    ckpt = torch.load(ckpt_path, weights_only=True)
    weights = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    torch.save(weights, tmp_path / "tiny.pth")
    net = timm.create_model(
        "resattn_tiny_cifar",
        pretrained=True,
        num_classes=10,
        in_chans=1,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "tiny.pth")),
    ).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x))


def test_fused_is_asked_for_by_the_configs_and_used_on_cuda_only(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    for name in ("sgd", "adamw"):
        cfg = compose_config("train", [f"optimizer={name}"], tmp_path)
        assert cfg.optimizer.fused is True
        optimizer = build_optimizer(net, cfg.optimizer)
        assert not optimizer.defaults.get("fused")  # CPU parameters: the default implementation
    if torch.cuda.is_available():
        assert build_optimizer(net.cuda(), {**SGD, "fused": True}).defaults["fused"] is True


class DeviceReads(TorchFunctionMode):
    """Counts the tensor methods that read a value back to the host (a stream synchronisation on a GPU)."""

    READS = frozenset(
        {Tensor.item, Tensor.__bool__, Tensor.__int__, Tensor.__float__, Tensor.tolist, Tensor.numpy, Tensor.cpu}
    )

    def __init__(self) -> None:
        super().__init__()
        self.calls: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.READS:
            self.calls[func.__name__] += 1
        return func(*args, **(kwargs or {}))


class CountTrainingReads(L.Callback):
    """Counts device reads from the first training batch to the end of the epoch's last batch."""

    def __init__(self) -> None:
        self.reads = DeviceReads()

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == 0:
            self.reads.__enter__()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reads.__exit__(None, None, None)


def test_training_steps_read_nothing_back_from_the_device_between_logging_steps(tmp_path: Path) -> None:
    with DeviceReads() as reads:
        if not torch.isfinite(torch.tensor(1.0)):
            pytest.fail("unreachable")
    assert reads.calls == {"__bool__": 1}  # the counter sees a host-side test of a loss
    train, _ = loaders(n=48)
    counter = CountTrainingReads()
    model = tiny_classifier(mixup={"mixup_alpha": 0.2}, ema_decay=0.9)
    fit = quiet_trainer(
        tmp_path, callbacks=[counter], limit_val_batches=0, log_every_n_steps=100, enable_progress_bar=False
    )
    fit.fit(model, train)
    assert fit.global_step == 6
    assert counter.reads.calls == {}


def test_checkpoints_with_hyper_parameters_of_another_version_are_refused(tmp_path: Path) -> None:
    model = tiny_classifier()
    hparams = {**model.hparams, "model_kwargs": {"mask_type": "channel"}}  # the options' node before `net`
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, path)
    with pytest.raises(CheckpointError, match=r"does not take \(model_kwargs\): it was written by another version"):
        load_classifier(path)
