# The two commands of the README:
#   make quickstart   set up, then train the tiny attention network on Fashion-MNIST (offline)
#   make test         set up, then run the test suite
PY := .venv/bin/python

.PHONY: setup quickstart test timm-tests lint format summary bench results

setup:
	@bash scripts/setup.sh

quickstart: setup
	$(PY) train.py experiment=quickstart

# The suite on every core (pytest-xdist; at most 4 workers, each with its share of torch threads: tests/conftest.py).
test: setup
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist worksteal

# timm's own model tests (tests/test_models.py of the installed timm's sdist, fetched by setup) on every variant;
# make test runs them on the tiny and CIFAR nets (tests/test_timm_models.py). Add e.g. K=resattn56 for fewer.
K ?= resattn
timm-tests: setup
	cd .timm-tests && PYTHONPATH=$(CURDIR):$(CURDIR)/tests $(CURDIR)/$(PY) -m pytest tests/test_models.py \
		$(CURDIR)/tests/timm_feature_contract.py -p resattn_timm_plugin -p no:cacheprovider -k "$(K)"

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

summary: setup
	$(PY) -m resattn.summary

bench: setup
	$(PY) -m pip install -q -e ".[bench]" && $(PY) -m benchmarks.run

# RESULTS.md from the three Fashion-MNIST runs (hours each on a CPU; rerunning resumes each where it stopped and only
# reports a finished one), then the trained Attention-56 as the pretrained tag resattn56_cifar.fmnist.
results: setup
	$(PY) train.py -m experiment=fmnist
	$(PY) train.py -m experiment=fmnist attention=nal
	$(PY) train.py -m experiment=fmnist model=resnet101
	$(PY) -m analysis.results fmnist --output RESULTS.md
	$(PY) -m analysis.export_weights "logs/fmnist/multiruns/experiment:fmnist/experiment:fmnist+seed:0" --tag fmnist
