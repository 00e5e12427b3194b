# Set-up and the everyday commands. `make demo` and `make test` are the README's quick start.
# Set-up makes a virtual environment in .venv and installs torch==2.13.0 first (a plain or
# unpinned torch could pull a different build), then this package with pinned dependencies.

VENV ?= .venv
PY := $(VENV)/bin/python
MASS := $(VENV)/bin/mass

.PHONY: setup demo test test-quick pretrain clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# The main job on the embedded defaults: the Base row on minimath-500.
demo: setup
	$(MASS) eval --method base --data minimath-500 --out results/minimath-500/base.json

test: setup
	$(PY) -m pytest -q

test-quick: setup
	$(PY) -m pytest -q -m "not slow"

# Reproduce the embedded checkpoint from scratch (about 35 minutes on 2 CPU cores).
pretrain: setup
	$(MASS) pretrain out=runs/pretrain

clean:
	rm -rf $(VENV) runs .pytest_cache
