# `make test` and `make demo` set everything up on first use: a virtual environment in
# .venv with the project installed (editable) and its test tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/pip --disable-pip-version-check -q

.PHONY: install test test-fast lint typecheck demo bench dashboard clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2

# The inner loop: everything but the tests marked slow (trainings, studies, processes).
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 -m "not slow"

# Style, the layering (search → lightning_modules → models, data; pyproject's contracts) and
# types (mypy on the package as it installs: nar_search.*, through .typecheck/'s links).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory typecheck

typecheck: $(STAMP)
	@mkdir -p .typecheck/nar_search
	@for package in search models data lightning_modules prediction; do ln -sfn ../../$$package .typecheck/nar_search/$$package; done
	cd .typecheck && ../$(BIN)/mypy --config-file ../pyproject.toml -p nar_search

demo: $(STAMP)
	$(BIN)/nar demo

dashboard: $(STAMP)
	$(BIN)/nar dashboard

clean:
	rm -rf demo outputs runs lightning_logs
