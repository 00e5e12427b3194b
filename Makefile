# Set-up and the everyday commands. `make demo` and `make test` are the README's quick start.
# Set-up makes a virtual environment in .venv and installs torch==2.13.0 first (a plain or
# unpinned torch could pull a different build), then this package with pinned dependencies.

VENV ?= .venv
PY := $(VENV)/bin/python
MASS := $(VENV)/bin/mass

.PHONY: setup demo reproduce test test-quick pretrain clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# The main job: the paper's table on minimath-500 from the shipped checkpoints (all six methods),
# over NPROC single-threaded processes (the embedded model is too small for threads to help).
NPROC ?= 2
# Checkpoints that are neither shipped nor in results/ are trained first, in one process.
CKPT_DIRS := $(foreach m,mass mass-gold solver-grpo,mass/assets/checkpoints/$(m) results/minimath-500/checkpoints/$(m))
demo: setup
	@n=0; for d in $(CKPT_DIRS); do [ -f $$d/mass.json ] && n=$$((n+1)); done; \
	if [ $$n -lt 3 ]; then echo "training the missing checkpoints first (one process)"; \
	  $(MASS) table train_only=true; fi
	OMP_NUM_THREADS=1 $(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC) -m mass table

# The whole reproduction from scratch: pretraining, meta-training, Solver GRPO, the table.
reproduce: setup
	PATH=$(VENV)/bin:$$PATH bash scripts/reproduce.sh

test: setup
	$(PY) -m pytest -q

test-quick: setup
	$(PY) -m pytest -q -m "not slow"

# Reproduce the embedded checkpoint from scratch (about 40-55 minutes on 2 CPU cores).
pretrain: setup
	$(MASS) pretrain out=runs/pretrain

clean:
	rm -rf $(VENV) runs .pytest_cache
