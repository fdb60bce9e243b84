# make setup | make repro | make test | make bench
# Each target first makes .venv (if missing) and installs the pinned dependencies and the
# project; reinstalls only when requirements.txt or pyproject.toml changed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test bench

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/train_speed.py
