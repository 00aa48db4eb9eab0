# Two commands do all set-up on a fresh machine: `make repro` (the main job) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.finesyn-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test bench lint clean-venv

# (Re)install when pyproject.toml or the lock changes. requirements.lock pins every transitive
# dependency to the versions the pipeline was tested with.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test]'
	touch $@

setup: $(STAMP)

repro: setup  ## run the default grid end to end (dvc repro) and print the results table
	$(BIN)/dvc repro
	$(BIN)/python -m finesyn.report

test: setup  ## the whole test suite
	$(BIN)/python -m pytest -q

bench: setup  ## benchmarks -> benchmarks/results.json
	$(BIN)/python -m benchmarks.run

clean-venv:
	rm -rf $(VENV)
