"""Moved to :mod:`analysis.wandb_offline` (``python -m analysis.wandb_offline``)."""

from lightning_modules.moved import moved

moved("lightning_modules.wandb_offline", run_as_script=__name__ == "__main__")
