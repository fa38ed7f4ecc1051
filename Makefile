# Set-up and entry points. Every target creates or reuses .venv and installs from constraints.txt.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
SHARED  := $(abspath ../shared/datasets)
# Point the loaders at ../shared/datasets when it exists (else: cache dir, then checked download).
export DDN_RAY_DATA_DIR ?= $(if $(wildcard $(SHARED)),$(SHARED),)
export RAY_DATA_DISABLE_PROGRESS_BARS := 1
export NO_MKDOCS_2_WARNING := 1
CONFIG  ?= jobs/configs/elec2.yaml

.PHONY: setup run test unit integration lint docs docs-build results bench-freshness fashion-mnist bbc-news gym-dynamics nab

FASHION := /usr/share/datasets/fashion-mnist

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[test,text,control,lint,docs]'
	touch $@

# Fashion-MNIST from Debian's package (benchmarks/fashion_mnist_tasks.py); a warning, not a failure, without apt.
$(FASHION):
	-command -v apt-get >/dev/null && (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
	  || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) \
	  || echo "warning: could not install dataset-fashion-mnist; Fashion-MNIST loaders will look in \$$DDN_RAY_DATA_DIR"

setup: $(BIN)/.installed $(FASHION)

run: setup  ## the main job on all of Elec2, local Ray started in-process
	$(BIN)/ddn-ray run --config $(CONFIG)

fashion-mnist: setup  ## use case: a CNN under rotation / new classes, PNG over HTTP (every variant)
	$(BIN)/python jobs/fashion_mnist.py

bbc-news: setup  ## use case: topic drift, hashed n-grams vs frozen MiniLM + head, raw text over HTTP
	$(BIN)/python jobs/bbc_news.py

gym-dynamics: setup  ## use case: forward dynamics of CartPole / Pendulum under drifting physics, worn-actuator alarm
	$(BIN)/python jobs/gym_dynamics.py

nab: setup  ## use case: streaming anomaly detection on NAB series (one forecaster per run), NAB scores
	$(BIN)/python jobs/nab.py

test: setup  ## unit tier, then integration tier on one local Ray cluster
	$(BIN)/python -m pytest -q --durations=25

lint: setup  ## ruff (lint, format check) on the repository, mypy on ddn_ray/ (strict on the engine: pyproject)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

docs: setup  ## the documentation site at http://127.0.0.1:8000 (docs/; mkdocs.yml)
	$(BIN)/mkdocs serve

docs-build: setup  ## results tables up to date with benchmarks/results/, then the site with every link checked
	$(BIN)/python docs/gen_results.py --check
	$(BIN)/mkdocs build --strict --quiet

results: setup  ## rewrite the results pages and tables from benchmarks/results/
	$(BIN)/python docs/gen_results.py

unit: setup
	$(BIN)/python -m pytest -q tests/unit ddn_ray

integration: setup
	$(BIN)/python -m pytest -q tests/integration

bench-freshness: setup
	$(BIN)/python benchmarks/freshness.py
