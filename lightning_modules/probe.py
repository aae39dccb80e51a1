"""Moved to :mod:`analysis.probe` (``python -m analysis.probe``)."""

from lightning_modules.moved import moved

moved("lightning_modules.probe", run_as_script=__name__ == "__main__")
