# The two set-up commands of the README: `make demo` (the main job) and `make test`.
# Each creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test generate check-generated lint typecheck pytest bench dist clean

SCHEMA_DIST := packages/baqup-schema

# baqup-schema first, from this repository (editable): baqup-agent pins its version, so
# pip takes this one and never looks for the name on PyPI
$(STAMP): pyproject.toml $(SCHEMA_DIST)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e $(SCHEMA_DIST)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP) check-generated lint typecheck pytest

generate: $(STAMP)
	$(BIN)/python codegen/generate.py

check-generated: $(STAMP)
	$(BIN)/python codegen/generate.py --check

lint: $(STAMP)
	$(BIN)/ruff check src packages tests codegen bench examples
	$(BIN)/ruff format --check src packages tests codegen bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# both wheels (baqup-schema, baqup-agent) into dist/, with the build backend of the dev extra
dist: $(STAMP)
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist $(SCHEMA_DIST) .

clean:
	rm -rf $(VENV) build dist $(SCHEMA_DIST)/build .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-output bench/.work
