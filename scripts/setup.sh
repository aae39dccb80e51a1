#!/usr/bin/env bash
# Everything resattn needs on a fresh machine; rerunning it is fast when nothing changed.
#   1. Fashion-MNIST from Debian's dataset-fashion-mnist (offline data for the quickstart and tests)
#   2. a virtual environment with the project, its dev tools and the hf and streaming extras, cached by the hash of
#      pyproject.toml under ~/.cache/resattn (RESATTN_VENV_CACHE) and linked as ./.venv
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

hash=$(sha256sum pyproject.toml | cut -c1-16)
venv="${RESATTN_VENV_CACHE:-$HOME/.cache/resattn}/venv-$hash"
if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e ".[dev,hf,streaming]"
    touch "$venv/.complete"
else
    # A cached environment may come from another clone: point the editable install here.
    "$venv/bin/python" -m pip install -q --no-deps -e .
fi
if [ -d .venv ] && [ ! -L .venv ]; then
    echo "error: ./.venv is a directory, not the cached environment; remove it and rerun" >&2
    exit 1
fi
ln -sfn "$venv" .venv
