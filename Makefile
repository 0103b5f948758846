# `make run`: set up and start the station on its embedded default.
# `make test`: set up and run lint, type checks and the whole test suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The station itself needs no training extra; the tests also cover the optional YOLO trainer
# (ultralytics, AGPL-3.0), so only `make test` installs it.
RUN_EXTRAS ?= audio,camera,plc
TEST_EXTRAS ?= dev,audio,camera,plc,yolo

.PHONY: setup run test lint bench clean
.PRECIOUS: $(VENV)/.installed-%

$(VENV)/.installed-%: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(if $(filter test,$*),$(TEST_EXTRAS),$(RUN_EXTRAS))]"
	touch $@

setup: $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/edge-inspect run

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(VENV)/.installed-test
	bash scripts/install-system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-test
	$(BIN)/python bench/bench_api.py

clean:
	rm -rf $(VENV) data
