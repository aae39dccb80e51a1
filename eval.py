"""Evaluate a checkpoint: ``python eval.py ckpt_path=logs/train/runs/.../checkpoints/last.ckpt data=cifar10``.

Reports top-1/top-5 and per-class accuracy (optionally at several test sizes: ``test_sizes=[224,320]``),
writes a confusion matrix PNG, and classifies a folder of your own images with ``predict_dir=...``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lightning_modules.config_resolvers import register_resolvers
from lightning_modules.console import bad_input_reported
from lightning_modules.evaluation_task import evaluate

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Run the evaluation task."""
    with bad_input_reported():
        evaluate(cfg)


if __name__ == "__main__":
    main()
