# Two commands: `make run` starts Corral with demo data on SQLite; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Corral needs Python 3.11 or newer (PYTHON=$(PYTHON) is " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

run: $(VENV)/.installed
	$(BIN)/corral serve --demo

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n 3 --dist loadscope $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/decide.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/mcp.py
	$(BIN)/python bench/hooks.py
	$(BIN)/python bench/metrics.py

clean:
	rm -rf $(VENV) .corral .pytest_cache .hypothesis
