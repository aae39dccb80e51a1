"""Train a Residual Attention Network: ``python train.py model=att56 data=cifar100``.

Configs live in conf/ (see README.md); the work is done by :func:`lightning_modules.training_task.train`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lightning_modules.config_resolvers import register_resolvers
from lightning_modules.console import bad_input_reported
from lightning_modules.training_task import train

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Run one training job; return ``optimized_metric`` for sweepers (Optuna)."""
    with bad_input_reported():
        metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
