# Two commands do all set-up on a fresh machine: `make repro` (the main job) and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.finesyn-installed
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help setup repro test bench lint vendor-vega clean-venv

# (Re)install when pyproject.toml or the lock changes. requirements.lock pins every transitive
# dependency to the versions the pipeline was tested with. --no-compile: pip byte-compiles every
# installed module (torch's thousands) up front; Python compiles the ones a stage imports on first use
# instead (measured on a 2-core EPYC: install 107 s -> 61 s, the first `import torch` 4 s -> 12 s).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -c requirements.lock -e '.[test]'
	touch $@

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  make \1\t\2/' | expand -t 20

setup: $(STAMP)  ## create .venv/ and install the pinned dependencies (the other targets do it first)

# The report stage writes the tables (reports/); the last line prints them, once, also when dvc
# repro had nothing to rerun.
repro: setup  ## run the default grid end to end (dvc repro) and print the results table
	$(BIN)/dvc repro
	$(BIN)/python -m finesyn.report

# Two pytest-xdist workers, each test file on one worker (its module fixtures are built once):
# most of the suite's time is dvc/snakemake subprocesses starting up, which overlap well on 2 cores.
TEST_WORKERS ?= 2
test: setup  ## the whole test suite (TEST_WORKERS=0 runs it in one process)
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The peer of the MoCo v2 comparison (lightly) is installed for the benchmark only, into
# .bench-deps/ (put on sys.path by benchmarks/peer.py), never into the venv or the project's
# dependencies. If it cannot be installed the benchmark records the reason and skips the peer.
BENCH_DEPS := .bench-deps
LIGHTLY_VERSION := 1.6.0
$(BENCH_DEPS)/.lightly-$(LIGHTLY_VERSION):
	@if $(BIN)/python -m pip install --quiet --upgrade --no-deps --target $(BENCH_DEPS) lightly==$(LIGHTLY_VERSION); then \
		touch $@; else echo "warning: lightly==$(LIGHTLY_VERSION) not installed: the peer comparison will be skipped"; fi

bench: setup $(BENCH_DEPS)/.lightly-$(LIGHTLY_VERSION)  ## benchmarks -> benchmarks/results.json, results.md (BENCH_ARGS=--quick for a smoke run)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# ruff and mypy (pinned in .[test]; settings in pyproject.toml): the formatter's check, the linter,
# and the type checker over src/ and stages/ (the files listed under [tool.mypy]).
lint: setup  ## ruff format --check + ruff check + mypy (what .ci/run runs before the tests)
	$(BIN)/ruff format --check src stages tests benchmarks studies tools
	$(BIN)/ruff check src stages tests benchmarks studies tools
	$(BIN)/mypy

vendor-vega:  ## rewrite .dvc/plots/offline.html (dvc plots' page with vega inlined; needs npm and the registry)
	python3 tools/vendor_vega.py

clean-venv: ## delete .venv/ (the next target reinstalls it)
	rm -rf $(VENV)
