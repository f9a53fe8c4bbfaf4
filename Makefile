# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   - create .venv if missing, install, train CycleGAN on the built-in dataset (CPU, minutes)
#   make test   - same set-up, then pytest: every notebook run as in Colab, the library tests, the site preview
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# 2 cores: one torch process at a time, using both.
export OMP_NUM_THREADS ?= 2

.PHONY: demo test install browser export nbdev-test preview gpu-check help
help:
	@sed -n '1,3p' Makefile

$(STAMP): setup.py settings.ini
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cyclegan_edu_train --dataroot toy --name toy_demo --resume

# tests/test_notebooks.py runs every notebook (as nbdev_test would, from an empty folder, without nbdev);
# tests/test_preview.py opens every page of the site in headless Chromium.
# Two test processes with one thread each: no thread oversubscription (the spin-waiting that makes two 2-thread torch
# processes crawl on 2 cores), and about 1.7x faster than one 2-thread process on the notebooks. The longest tests start
# first and an idle worker takes tests queued for the other (tests/conftest.py), so both finish together.
test: $(STAMP) browser
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist worksteal tests

# The site preview test needs a headless Chromium (it is skipped, saying why, without one). As root with apt-get,
# install it when missing, with a local MathJax so the screenshots show typeset math.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && echo "Installing chromium for tests/test_preview.py (apt-get)..." \
	       && apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium libjs-mathjax >/dev/null; } \
	  || echo "No chromium: tests/test_preview.py will be skipped (install chromium to run it)."

# On a machine with an NVIDIA GPU: every CUDA test and `#| cuda` cell, the speed benchmark at 256², the largest batch,
# --fast vs eager on quality, walkthroughs 1 and 3 in their GPU-check mode, DDP with NCCL on 2+ GPUs; reports in
# gpu-check/ (report.md, report.json), exit 1 on any failure. `make test` runs it in its dry mode on the CPU.
gpu-check: $(STAMP)
	OMP_NUM_THREADS=$$(nproc) $(BIN)/python tools/gpu_check.py --out gpu-check --budget 480

# Developer conveniences (not needed for the two commands above).
export: $(STAMP)
	$(BIN)/nbdev_export && $(BIN)/nbdev_clean

nbdev-test: $(STAMP)
	$(BIN)/nbdev_test --n_workers 1 --timing

preview: $(STAMP) browser
	$(BIN)/python tools/preview.py
