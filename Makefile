# loopdrive: `make demo` and `make test` do all the set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.loopdrive-setup
PYTEST_ARGS ?=

.PHONY: setup bench-setup demo test lint bench clean

setup: $(STAMP)

# The venv takes about 5 GB; --no-cache-dir keeps pip from storing a second copy of the wheels.
# Re-runs only when the dependency list or the set-up scripts change (idempotent, quick otherwise).
$(STAMP): pyproject.toml scripts/install-system-deps.sh scripts/fix_torchvision.py
	bash scripts/install-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-cache-dir --upgrade pip setuptools wheel
	$(PY) -m pip install -q --no-cache-dir -e '.[dev]'
	$(PY) scripts/fix_torchvision.py
	touch $(STAMP)

demo: setup
	$(VENV)/bin/loopdrive demo --out out/demo

test: setup
	$(PY) -m ruff check sim agents tests
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m mypy
	$(PY) -m pytest -n 2 --dist loadfile -q $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check sim agents tests
	$(VENV)/bin/lint-imports --no-logo
	$(PY) -m mypy

# the bench extra (highway-env for `loopdrive bench env`); numpy<2 and pandas<3 keep nerfstudio's stack
bench-setup: setup
	$(PY) -m pip install -q --no-cache-dir -e '.[bench]' 'numpy<2' 'pandas<3'

bench: bench-setup
	$(VENV)/bin/loopdrive bench all --quick

clean:
	rm -rf out .pytest_cache
