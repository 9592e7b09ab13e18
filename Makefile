.PHONY: install check test bench

VENV ?= .venv
PY := $(VENV)/bin/python

install:
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'

# Everything CI checks: lint, layering, types of the core, the tests.
check:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	$(PY) -m pytest

test:
	$(PY) -m pytest

bench:
	$(PY) -m benchmarks.queue_bench
