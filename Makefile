# `make run`: set up and start the station on its embedded default.
# `make test`: set up and run lint, type checks and the whole test suite.
# Every install is constrained by constraints.txt (exact versions), so a fresh clone installs the
# same packages a year later; `make constraints` re-pins it from .venv after a deliberate upgrade.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The station itself needs no training extra; the tests also cover the optional YOLO trainer
# (ultralytics, AGPL-3.0), so only `make test` installs it.
RUN_EXTRAS ?= audio,camera,plc
TEST_EXTRAS ?= dev,audio,camera,plc,yolo

.PHONY: setup run test lint bench clean constraints
.PRECIOUS: $(VENV)/.installed-%

# setuptools comes from constraints.txt too: tests/test_install.py builds the wheel offline, without build isolation
$(VENV)/.installed-%: pyproject.toml Makefile constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt pip setuptools
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(if $(filter test,$*),$(TEST_EXTRAS),$(RUN_EXTRAS))]"
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

# Keeps the file's comment header; the project itself (editable) is left out.
constraints:
	{ grep '^#' constraints.txt; $(BIN)/python -m pip freeze --all --exclude-editable \
	  | grep -viE '^edge[-_]inspect[= ]' | sed -E 's/^(torch==[^+]*)\+cpu$$/\1/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) data
