# make setup | make repro | make lint | make test | make test-avx2 | make bench
# Each target first makes .venv (if missing) and installs the pinned dependencies and the
# project; reinstalls only when requirements.txt or pyproject.toml changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro lint test test-avx2 bench

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $@

repro: setup
	$(BIN)/dvc repro

# ruff (lint, then format) and mypy, as configured in pyproject.toml; any finding fails
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# The fast tests again with PyTorch's CPU kernels limited to AVX2, as on a CPU without AVX512:
# no native bf16 there, so precision auto is fp32 and bf16 is emulated.
test-avx2: setup
	ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(BIN)/python -m pytest -m "not slow"

bench: setup
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/profile_step.py
