# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test warmup asv-check clean

demo: $(VENV)/.installed
	$(BIN)/python examples/demo.py

# warmup compiles the drivers and every kernel for both dtypes first, one process per core, into
# Numba's cache (a no-op when they are cached already); pytest-xdist then runs the tests in one
# worker process per core (at most TEST_JOBS; `make test TEST_JOBS=0` runs them in this process)
TEST_JOBS ?= 4
test: $(VENV)/.installed-test
	$(BIN)/python -m fastbp.warmup --preset suite --quiet
	$(BIN)/python -m pytest $(if $(filter 0,$(TEST_JOBS)),,-n auto --maxprocesses=$(TEST_JOBS))

warmup: $(VENV)/.installed
	$(BIN)/python -m fastbp.warmup --preset all

# imports every asv benchmark module (the tests also run each benchmark once)
asv-check: $(VENV)/.installed-test
	cd asv_bench && ../$(BIN)/asv check --python=same

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
