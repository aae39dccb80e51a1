"""timm's intermediate-feature tests, which its ``tests/test_models.py`` selects only for timm's own model modules
(``FEAT_INTER_FILTERS``), run on resattn's variants.

Not collected by the project's suite (no ``test_`` prefix): ``tests/test_timm_models.py`` and ``make timm-tests``
pass it to pytest beside timm's file, from the ``.timm-tests`` folder, where ``tests.test_models`` is timm's module.
The test bodies are timm's own functions, unchanged; only the model list is ours.
"""

from __future__ import annotations

import pytest
import tests.test_models as timm_tests  # timm's sdist tests (the cwd is .timm-tests)
import timm

import resattn  # noqa: F401  (registers the variants with timm)

VARIANTS = timm.list_models("resattn*")


@pytest.mark.parametrize("model_name", VARIANTS)
def test_model_forward_intermediates(model_name: str) -> None:
    timm_tests.test_model_forward_intermediates(model_name, 1)


@pytest.mark.parametrize("model_name", VARIANTS)
def test_model_forward_intermediates_features(model_name: str) -> None:
    timm_tests.test_model_forward_intermediates_features(model_name, 1)


@pytest.mark.parametrize("model_name", VARIANTS)
def test_prune_intermediate_layers_contract(model_name: str) -> None:
    timm_tests.test_prune_intermediate_layers_contract(model_name)
