# Two entry points (see README): `make demo` runs the main job, `make test` the test suite.
# Both set up .venv and the offline data idempotently first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup data demo test test-fast restore bench clean-venv

setup: $(STAMP) data

# torch/torchvision are pinned and come from the machine's local wheels; everything else from PyPI.
# compat mode puts the repository itself on sys.path, so new packages need no reinstall.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e . --config-settings editable_mode=compat
	touch $@

data: $(STAMP)
	bash scripts/fetch_system_data.sh
	$(PY) -m common.data prepare --root data

demo: setup
	$(PY) bootleg/launch.py

# --durations: every CI log lists the slowest tests (the suite's time budget is kept from them).
# PYTEST_ARGS selects part of the suite, e.g. make test PYTEST_ARGS='-m "not slurm"' (.ci/run does)
PYTEST_ARGS ?=
test: setup
	$(PY) -m pytest -q -ra --durations=25 $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -ra -m "not slurm and not dvcremote and not slow"

# The pinned DVC outputs: pulled from the default remote, or rebuilt with dvc repro where it is
# missing (scripts/restore.py). `make restore STAGES=pretrain@bootleg` for one stage and its needs.
restore: setup
	$(PY) scripts/restore.py $(STAGES)

bench: setup
	$(PY) benchmarks/vit_throughput.py

clean-venv:
	rm -rf $(VENV)
