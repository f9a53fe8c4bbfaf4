# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   - create .venv if missing, install, train CycleGAN on the built-in dataset (CPU, minutes)
#   make test   - same set-up, then every notebook as a test, pytest, and the nbdev sync/clean/docs checks
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# 2 cores: one torch process at a time, using both.
export OMP_NUM_THREADS ?= 2

.PHONY: demo test install export help
help:
	@sed -n '1,4p' Makefile

$(STAMP): setup.py settings.ini
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cyclegan_edu_train --dataroot toy --name toy_demo --resume

test: $(STAMP)
	$(BIN)/nbdev_test --n_workers 1 --timing
	$(BIN)/python -m pytest -q tests

# Developer conveniences (not needed for the two commands above).
export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean
