"""Optional dependencies: the data choices that need one import it through :func:`require`, whose error names the
``pip`` extra that installs it (pyproject.toml: ``hf`` for Hugging Face ``datasets``, ``streaming`` for litdata)."""

import importlib
from types import ModuleType

EXTRAS = {"datasets": "hf", "litdata": "streaming"}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message (and ``extra``) says which extra installs it."""

    def __init__(self, message: str, extra: str) -> None:
        super().__init__(message)
        self.extra = extra


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a key of ``EXTRAS``) or raise a :class:`MissingExtraError` naming its extra."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = EXTRAS[module]
        raise MissingExtraError(
            f"{purpose} needs the optional package {module!r} ({type(err).__name__}: {err}). Install it with "
            f'`pip install -e ".[{extra}]"` in the resattn checkout (or `pip install "resattn[{extra}]"`).',
            extra,
        ) from err
