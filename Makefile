# `make run`: set up and start the station on its embedded default.
# `make test`: set up and run lint, type checks and the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= dev,audio,camera,plc

.PHONY: setup run test lint bench clean

STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

setup: $(STAMP)

run: setup
	$(BIN)/edge-inspect run

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: setup
	bash scripts/install-system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/bench_api.py

clean:
	rm -rf $(VENV) data
