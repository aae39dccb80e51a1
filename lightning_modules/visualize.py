"""Moved to :mod:`analysis.masks` (``python -m analysis.masks``)."""

from lightning_modules.moved import moved

moved("lightning_modules.visualize", run_as_script=__name__ == "__main__")
