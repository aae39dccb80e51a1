"""timm's own model tests (``tests/test_models.py`` of the installed timm's sdist) on resattn's small variants.

scripts/setup.sh (which ``make test`` runs first) fetches the sdist once, caches it and links it as ``.timm-tests``.
The file runs as timm runs it, in its own pytest process with timm's pytest settings, with
``-p resattn_timm_plugin`` importing resattn before the file lists the models; ``-k`` picks the small variants
below (and their pretrained tags). Every test timm selects for them must pass. ``make timm-tests`` runs the
same file on every variant (``-k resattn``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from email.parser import Parser
from pathlib import Path

import pytest
import timm

import resattn

ROOT = Path(__file__).resolve().parents[1]
TIMM_TESTS = ROOT / ".timm-tests"
# Both layouts (the tiny ImageNet and CIFAR nets), the CIFAR Attention-56 and its ResNeXt and Inception twins and the
# plain CNN: every unit type, stem, head and mask depth. The deeper CIFAR nets repeat the same modules (scripting and
# FX tracing grow with depth: Attention-452 alone takes minutes); they run, with the ImageNet ones, in make timm-tests.
SMALL_VARIANTS = [
    "resattn_tiny",
    "resattn_tiny_cifar",
    "resattn56_cifar",
    "resattnext56_cifar",
    "resattninception56_cifar",
    "resattn_plaincnn_cifar",
]
# timm's intermediate-feature contract (timm_feature_contract.py) prunes and reruns the network at every level, which
# takes minutes for the 56-layer nets on 2 cores: here it runs on both layouts' tiny nets and the plain CNN (7 layers),
# make timm-tests on all.
CONTRACT_VARIANTS = ["resattn_tiny", "resattn_tiny_cifar", "resattn_plaincnn_cifar"]
CONTRACT_FAMILIES = {
    "test_model_forward_intermediates",
    "test_model_forward_intermediates_features",
    "test_prune_intermediate_layers_contract",
}


# timm's tests that load pretrained weights: they run on the models with weights, here the shipped tags
PRETRAINED_FAMILIES = {"test_model_load_pretrained", "test_model_features_pretrained"}


def timm_tests_version() -> str | None:
    """The version of the timm sdist linked as ``.timm-tests``, None when the set-up has not fetched it."""
    if not (TIMM_TESTS / ".complete").is_file():
        return None
    return Parser().parsestr((TIMM_TESTS / "PKG-INFO").read_text())["Version"]


def run_timm_tests(keyword: str, junit: Path) -> subprocess.CompletedProcess:
    """timm's ``tests/test_models.py -k keyword`` in its own process, results written to ``junit``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    command = [sys.executable, "-m", "pytest", "tests/test_models.py", str(ROOT / "tests" / "timm_feature_contract.py")]
    command += ["-p", "resattn_timm_plugin"]
    command += ["-p", "no:cacheprovider", "-q", "-k", keyword, f"--junitxml={junit}"]
    return subprocess.run(command, cwd=TIMM_TESTS, env=env, capture_output=True, text=True, timeout=1800)


def outcomes(junit: Path) -> dict[str, dict[str, str]]:
    """``{test family: {model name: passed|failed|skipped}}`` from pytest's JUnit XML."""
    results: dict[str, dict[str, str]] = defaultdict(dict)
    for case in ET.parse(junit).iter("testcase"):
        family, params = case.get("name").rstrip("]").split("[", 1)
        model = next(p for p in params.split("-") if p.startswith("resattn"))
        failed = case.find("failure") is not None or case.find("error") is not None
        results[family][model] = "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
    return results


@pytest.mark.slow
def test_timm_model_tests_pass_on_the_small_variants(tmp_path: Path) -> None:
    assert set(SMALL_VARIANTS) <= set(resattn.VARIANTS)
    version = timm_tests_version()
    if version is None:
        pytest.skip("timm's tests are not fetched: run scripts/setup.sh (make test does)")
    assert version == timm.__version__, (
        f"{TIMM_TESTS} holds timm {version}'s tests, timm {timm.__version__} is installed: rerun scripts/setup.sh"
    )

    junit = tmp_path / "timm.xml"
    skipped_here = " or ".join(sorted(set(SMALL_VARIANTS) - set(CONTRACT_VARIANTS)))
    keyword = f"({' or '.join(SMALL_VARIANTS)}) and not (timm_feature_contract and ({skipped_here}))"
    proc = run_timm_tests(keyword, junit)
    assert junit.is_file(), f"timm's tests did not run:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = outcomes(junit)
    summary = {family: dict(Counter(by_model.values())) for family, by_model in results.items()}
    print(f"timm {version} tests/test_models.py on {len(SMALL_VARIANTS)} variants: {summary}")
    bad = sorted(f"{f}[{m}]: {o}" for f, by_model in results.items() for m, o in by_model.items() if o != "passed")
    assert not bad and proc.returncode == 0, "\n".join([*bad, proc.stdout[-5000:]])
    tested = {model.split(".")[0] for by_model in results.values() for model in by_model}
    assert tested == set(SMALL_VARIANTS)
    # each variant went through the same families, at least the eight timm's file had when this was written; the
    # tiny nets also through the three intermediate-feature tests timm keeps for its own modules; the families that
    # load weights ran on the shipped pretrained tags (resattn/weights/), and only on those
    shipped = {name for name in timm.list_pretrained("resattn*") if name.split(".")[0] in SMALL_VARIANTS}
    assert shipped, "no pretrained tag of the small variants is shipped (resattn/weights/)"
    variants = {
        f: {m.split(".")[0] for m in by_model} for f, by_model in results.items() if f not in PRETRAINED_FAMILIES
    }
    expected = {f: set(CONTRACT_VARIANTS if f in CONTRACT_FAMILIES else SMALL_VARIANTS) for f in variants}
    assert variants == expected, summary
    assert {f: set(results[f]) for f in PRETRAINED_FAMILIES} == {f: shipped for f in PRETRAINED_FAMILIES}, summary
    assert len(set(variants) - CONTRACT_FAMILIES) >= 8 and set(results) >= CONTRACT_FAMILIES, summary
