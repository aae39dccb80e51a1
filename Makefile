# The two commands of the README:
#   make quickstart   set up, then train the tiny attention network on Fashion-MNIST (offline)
#   make test         set up, then run the test suite
PY := .venv/bin/python

.PHONY: setup quickstart test lint format summary bench

setup:
	@bash scripts/setup.sh

quickstart: setup
	$(PY) train.py experiment=quickstart

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

summary: setup
	$(PY) -m resattn.summary

bench: setup
	$(PY) -m pip install -q -e ".[bench]" && $(PY) -m benchmarks.run
