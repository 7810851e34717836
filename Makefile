# Set-up commands: `make demo` and `make test`. Both create .venv when it is missing.
# `make test` is the whole gate: ruff (lint and format), mypy (types), then every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast lint format ui emulator bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
demo: $(STAMP)
	$(BIN)/batch-pipeline demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -q

test-fast: lint
	$(BIN)/python -m pytest -q -m 'not slow'

ui: export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
ui: $(STAMP)
	$(BIN)/batch-pipeline ui

emulator: $(STAMP)
	$(BIN)/batch-pipeline emulator

# Benchmarks: ours vs a baseline and a floor in the same run (see bench/README.md).
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run_all.py --quick

clean:
	rm -rf $(VENV) .dagster_home .pytest_cache .ruff_cache
