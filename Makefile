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

# the baselines of `loopdrive bench env`: highway-env in the main venv (the bench extra; numpy<2 and
# pandas<3 keep nerfstudio's stack) and MetaDrive in its own venv $(MD_VENV) with the main venv's
# gymnasium (MetaDrive's opencv-python and pygame would overwrite the main venv's
# opencv-python-headless and highway-env's pygame-ce). `bench env` runs every simulator in its own
# process and uses $(MD_VENV)/bin/python for MetaDrive when it exists (offline: sim/bench/env_worker.py)
MD_VENV := .venv-metadrive
bench-setup: setup
	$(PY) -m pip install -q --no-cache-dir -e '.[bench]' 'numpy<2' 'pandas<3'
	test -x $(MD_VENV)/bin/python || $(PYTHON) -m venv $(MD_VENV)
	$(MD_VENV)/bin/python -m pip install -q --no-cache-dir 'metadrive-simulator==0.4.3' 'numpy<2' \
	    "gymnasium==$$($(PY) -c 'import gymnasium; print(gymnasium.__version__)')"

bench: bench-setup
	$(VENV)/bin/loopdrive bench all --quick

clean:
	rm -rf out .pytest_cache
