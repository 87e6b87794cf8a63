# Two entry points for a newcomer on a fresh Debian/Ubuntu machine (as root):
#   make demo   bring up the local lab cluster and converge it with aicluster
#   make test   every test: lint, types, unit, role and lab tests
# Both create .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit lab-test clean

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 && $(PYTHON) -c 'import ensurepip' 2>/dev/null || \
	  (echo "installing python3-venv" && apt-get update -qq && apt-get install -y -qq python3-venv)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy aicluster

unit: $(STAMP)
	$(BIN)/pytest -m 'not lab'

lab-test: $(STAMP)
	$(BIN)/pytest -m lab

test: lint $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
