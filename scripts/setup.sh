#!/usr/bin/env bash
# Everything resattn needs on a fresh machine; rerunning it is fast when nothing changed.
#   1. Fashion-MNIST from Debian's dataset-fashion-mnist (offline data for the quickstart and tests)
#   2. a virtual environment with the project, its dev tools and the export (ONNX), hf and streaming (data=hf,
#      data=streaming) and dashboards (python -m analysis.dashboards) extras, cached by the hash of pyproject.toml under ~/.cache/resattn (RESATTN_VENV_CACHE)
#      and linked as ./.venv
#   3. timm's own model tests (tests/test_models.py of the installed timm's source distribution, from PyPI),
#      cached under the same folder by timm's version and linked as ./.timm-tests (tests/test_timm_models.py)
set -euo pipefail
cd "$(dirname "$0")/.."

fmnist=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$fmnist" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
    elif command -v sudo >/dev/null; then
        sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
        echo "note: install Debian's dataset-fashion-mnist (or pass data.download=true) for Fashion-MNIST" >&2
    fi
fi

cache="${RESATTN_VENV_CACHE:-$HOME/.cache/resattn}"
hash=$(sha256sum pyproject.toml | cut -c1-16)
venv="$cache/venv-$hash"
# pip -q still relays setuptools' notes on every editable install; show pip's output only when it fails.
quiet_pip() {
    local output
    if ! output=$("$venv/bin/python" -m pip "$@" 2>&1); then
        printf '%s\n' "$output" >&2
        return 1
    fi
}
if [ ! -f "$venv/.complete" ]; then
    echo "Creating the virtual environment $venv (first time for this pyproject.toml: PyTorch, about 6 GB)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    quiet_pip install -q --upgrade pip
    quiet_pip install -q -e ".[dev,export,hf,streaming,dashboards]"
    touch "$venv/.complete"
else
    # A cached environment may come from another clone: point the editable install here.
    quiet_pip install -q --no-deps -e .
fi
if [ -d .venv ] && [ ! -L .venv ]; then
    echo "error: ./.venv is a directory, not the cached environment; remove it and rerun" >&2
    exit 1
fi
ln -sfn "$venv" .venv

timm_version=$("$venv/bin/python" -c "import importlib.metadata as m; print(m.version('timm'))")
timm_tests="$cache/timm-$timm_version"
if [ ! -f "$timm_tests/.complete" ]; then
    download=$(mktemp -d)
    trap 'rm -rf "$download"' EXIT
    if ! "$venv/bin/python" -m pip download -q --no-deps --no-binary :all: "timm==$timm_version" -d "$download" \
        || ! tar -xzf "$download/timm-$timm_version.tar.gz" -C "$download" \
            "timm-$timm_version/PKG-INFO" "timm-$timm_version/pyproject.toml" "timm-$timm_version/tests"; then
        echo "error: could not fetch timm $timm_version's source distribution from PyPI (pip download timm==$timm_version" >&2
        echo "  --no-binary :all:); make test runs its tests/test_models.py on resattn's networks. Run this set-up" >&2
        echo "  once with network access: it is cached in $timm_tests and works offline afterwards." >&2
        exit 1
    fi
    rm -rf "$timm_tests"
    mv "$download/timm-$timm_version" "$timm_tests"
    touch "$timm_tests/.complete"
fi
ln -sfn "$timm_tests" .timm-tests
