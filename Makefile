# The two commands a user needs: `make demo` and `make test`. Each builds .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench configs fuzz lint format clean venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/shoprec demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.run_all

# Every YAML in configs/ and benchmarks/configs/ through `shoprec train --set train.epochs=1`,
# `shoprec evaluate` and `shoprec recommend`, each in a fresh process (about an hour on 2
# cores; QUICK=1: one config per recipe); writes RESULTS.md "Every config from the CLI".
configs: $(STAMP)
	$(BIN)/python -m benchmarks.every_config $(if $(QUICK),--quick)

FUZZ_STAMP := $(VENV)/.installed-fuzz

$(FUZZ_STAMP): $(STAMP) requirements-fuzz.txt
	$(BIN)/pip install --quiet -r requirements-fuzz.txt
	touch $(FUZZ_STAMP)

# schemathesis against the service's OpenAPI document, then the hypothesis properties with
# many examples (tests/test_fuzz_api.py, tests/test_properties.py).
fuzz: $(FUZZ_STAMP)
	SHOPREC_FUZZ=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz_api.py
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_properties.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache src/*.egg-info
