"""Moved to :mod:`analysis.results` (``python -m analysis.results``)."""

from lightning_modules.moved import moved

moved("lightning_modules.results", run_as_script=__name__ == "__main__")
