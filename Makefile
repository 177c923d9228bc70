# cfviz — the two commands a newcomer needs are `make demo` and `make test`.
# Each creates the virtual environment (.venv) if it is missing and installs the exact
# tested versions from requirements/constraints.txt, so nothing has to be done by hand first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cfviz-installed
CONSTRAINTS := requirements/constraints.txt
PYTEST_ARGS ?=
# `make test-oldest`: a second venv at the lowest versions pyproject allows (requirements/oldest.txt)
OLDEST_VENV ?= build/venv-oldest
OLDEST_PY := $(OLDEST_VENV)/bin/python
OLDEST_STAMP := $(OLDEST_VENV)/.cfviz-installed
OLDEST := requirements/oldest.txt
OLDEST_TESTS ?= tests/models tests/capture tests/clip tests/aaclip tests/diffusion tests/metrics tests/test_versions.py

export MPLBACKEND ?= Agg
export PYTHONDONTWRITEBYTECODE = 1

.PHONY: help venv demo test test-oldest figures browser lock clean-data

help:
	@echo "make demo     run the pipeline on the embedded texture data set, write figures/ (creates .venv)"
	@echo "make test     run the test suite (creates .venv)"
	@echo "make test-oldest  run the model-facing tests at the lowest supported versions (creates $(OLDEST_VENV))"
	@echo "make figures  regenerate every figure from the notebooks (smoke mode unless CFVIZ_SMOKE=0)"
	@echo "make browser  install Debian's chromium for the explorer's browser test (needs apt, root)"
	@echo "make lock     re-resolve requirements/constraints.txt in a scratch venv"

venv: $(STAMP)

# A line per step and pip's own progress (a package per line, download bars on a terminal): the
# first install downloads a few GB and takes minutes, and must not look like a hang.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@echo "[1/3] virtual environment $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[2/3] installing cfviz with the tested versions of its dependencies ($(CONSTRAINTS)); the first time downloads PyTorch and friends (a few GB, minutes) ..."
	$(PY) -m pip install --disable-pip-version-check -c $(CONSTRAINTS) -e '.[dev]'
	@echo "[3/3] git filter: notebooks are committed without outputs"
	@! git rev-parse --git-dir >/dev/null 2>&1 || git config filter.cfviz-strip.clean '$(abspath $(PY)) -m cfviz.notebooks strip'  # .gitattributes: notebooks are committed without outputs
	@touch $(STAMP)
	@echo "installed: $(VENV)"

demo: $(STAMP)
	$(VENV)/bin/cfviz demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# pip takes PyPI's torch/torchvision at the lower bounds (CUDA builds, ~3 GB downloaded, cached by pip)
$(OLDEST_STAMP): pyproject.toml $(OLDEST)
	@test -x $(OLDEST_PY) || $(PYTHON) -m venv $(OLDEST_VENV)
	@echo "installing the oldest supported versions ($(OLDEST)) into $(OLDEST_VENV): ~3 GB the first time, minutes ..."
	$(OLDEST_PY) -m pip install --disable-pip-version-check -c $(OLDEST) -e '.[dev]'
	@touch $(OLDEST_STAMP)

test-oldest: $(OLDEST_STAMP)
	$(OLDEST_PY) -m pytest $(OLDEST_TESTS) $(PYTEST_ARGS)

figures: $(STAMP)
	$(VENV)/bin/cfviz run-notebooks --out figures

browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)
	@chromium --version

lock:
	rm -rf /tmp/cfviz-lock-venv && $(PYTHON) -m venv /tmp/cfviz-lock-venv
	/tmp/cfviz-lock-venv/bin/pip install --quiet 'torch==2.14.1' 'torchvision==0.29.1'
	/tmp/cfviz-lock-venv/bin/pip install --quiet -e '.[dev]'
	( echo "# Exact versions that cfviz is tested with; \`make\` installs from this file."; \
	  echo "# Regenerate with \`make lock\` (torch/torchvision are the builds on this machine's disk)."; \
	  /tmp/cfviz-lock-venv/bin/pip freeze --exclude-editable | grep -v '^cfviz' ) > $(CONSTRAINTS)
	$(PYTHON) requirements/tested_versions.py  # oldest.txt and cfviz/_tested_versions.py follow the lock

clean-data:
	rm -rf data/textures
