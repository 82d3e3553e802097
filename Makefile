# make demo | make test | make bench | make plugins — each installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench plugins lint clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[plugins,dev,bench]"
	touch $@

# Every plugin is built from source: the examples and the ones the tests use.
plugins: $(INSTALLED)
	$(BIN)/hyperfilter plugin build plugins/examples/*/ tests/plugins/*/

demo: plugins
	$(BIN)/hyperfilter demo

test: plugins
	$(BIN)/ruff check .
	$(BIN)/pytest

# QUICK=1: a CI-sized run.
bench: plugins
	$(BIN)/python -m bench $(if $(QUICK),--quick)

lint: $(INSTALLED)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .cache plugins/examples/*/*.wasm tests/plugins/*/*.wasm
