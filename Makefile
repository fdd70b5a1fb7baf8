# The two commands of the README: `make run` (the whole stack) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test demo demo-programme screenshots chaos bench-store bench-projections bench-programme bench-codec bench-ledger bench-scale lint clean-state

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

# Lint and type-check first: a quick failure beats one after the whole suite.
test: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

# Workers SIGKILLed under a cohort of pairs (the short variant runs in `make test`).
chaos: $(VENV)/.installed-dev
	$(PY) -m chaos --pairs $${PAIRS:-200} --kills $${KILLS:-200}

demo: $(VENV)/.installed
	$(PY) -m demo

# One programme from enrolment to its close report (needs `make run` in another terminal).
demo-programme: $(VENV)/.installed
	$(PY) -m demo_programme

# The README's UI walkthrough photographed from a real run (needs Debian's chromium package).
screenshots: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[screenshots]'
	$(PY) walkthrough.py

bench-store: $(VENV)/.installed-bench
	$(PY) -m bench.event_store

bench-projections: $(VENV)/.installed-bench
	$(PY) -m bench.projections

bench-programme: $(VENV)/.installed-bench
	$(PY) -m bench.programme

# The payload codec's cost: the same pairs prepared with and without encryption, same run.
bench-codec: $(VENV)/.installed-bench
	$(PY) -m bench.codec

# The log's commitment: appends with and without the sealer, sealing, checkpoints, verify, bundles.
bench-ledger: $(VENV)/.installed-bench
	$(PY) -m bench.ledger

# Thousands of live pairs on one worker, against bare Temporal doing the same work (PAIRS=1000 for a quick look).
bench-scale: $(VENV)/.installed-bench
	$(PY) -m bench.scale --pairs $${PAIRS:-10000}

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .

clean-state:
	rm -rf $${STATE_DIR:-.state}
