"""pytest plugin for running timm's own model tests (``tests/test_models.py`` of timm's sdist) on resattn.

``-p resattn_timm_plugin`` (with this folder on ``PYTHONPATH``) imports resattn before timm's test module lists the
models, so that the variants are among them, and declares the ``timeout`` mark timm's tests carry (it is
pytest-timeout's, which is not installed here, so it only documents timm's limit).
"""

from __future__ import annotations

import pytest

import resattn  # noqa: F401  (registers the variants with timm)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "timeout(seconds): pytest-timeout's time limit (not enforced here)")
