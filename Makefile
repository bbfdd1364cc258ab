# Two commands for a newcomer: `make demo` (set up everything, run the main job) and
# `make test` (set up everything, run the full test suite). Both are idempotent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup system-deps image demo test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: system-deps $(STAMP)

# Docker must be running; the offline image build needs Debian's mmdebstrap.
system-deps:
	@./scripts/system-deps

image: setup
	$(BIN)/jupyter-sandbox image build

demo: image
	$(BIN)/jupyter-sandbox demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: image lint
	@./scripts/system-deps --test
	JUPYTER_SANDBOX_REQUIRE_DOCKER=1 $(BIN)/pytest

# No Docker needed (nor started): only the virtualenv.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not docker and not slow"

bench: image
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
