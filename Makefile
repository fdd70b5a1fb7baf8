# The two commands of the README: `make run` (the whole stack) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test demo bench-store bench-projections lint clean-state

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-dev
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

run: $(VENV)/.installed
	$(PY) worker.py --dev

test: $(VENV)/.installed-dev
	$(PY) -m pytest

demo: $(VENV)/.installed
	$(PY) -m demo

bench-store: $(VENV)/.installed-bench
	$(PY) -m bench.event_store

bench-projections: $(VENV)/.installed-bench
	$(PY) -m bench.projections

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

clean-state:
	rm -rf $${STATE_DIR:-.state}
