"""Where the offline tools went when they left this package (training never imports them): old module paths in
users' scripts get one message naming the new one."""

from __future__ import annotations

import sys

MOVED = {
    "lightning_modules.results": "analysis.results",
    "lightning_modules.visualize": "analysis.masks",
    "lightning_modules.probe": "analysis.probe",
    "lightning_modules.wandb_offline": "analysis.wandb_offline",
}


def moved(old: str, run_as_script: bool) -> None:
    """Stop with the new place of ``old``: an exit message for ``python -m old``, an ImportError for ``import old``."""
    new = MOVED[old]
    message = f"{old} moved to {new}: use `python -m {new} ...` or `import {new}`"
    if run_as_script:
        sys.exit(f"error: {message}")
    raise ImportError(message)
