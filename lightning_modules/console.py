"""What train.py and eval.py leave out of the console (and train.log): messages that say nothing about the run.

Lightning advertises its cloud products on every run ("💡 Tip: ... try installing litlogger"), warns that the
model summary estimates bf16 sizes as fp32 and that a resumed run's checkpoint folder is not empty (resuming is the
point), and trips over a torch deprecation inside its own code. Everything else is shown.
"""

from __future__ import annotations

import logging
import warnings

KNOWN_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Precision .* is not supported by the model summary",
    r"Checkpoint directory .* exists and is not empty",
)


class DropAdverts(logging.Filter):
    """Drops Lightning's "💡 Tip" records (attached to its rank-zero logger by conf/hydra/job_logging)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("💡 Tip")


def quiet_known_warnings() -> None:
    """Ignore the warnings in :data:`KNOWN_WARNINGS` (this process only)."""
    for message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
