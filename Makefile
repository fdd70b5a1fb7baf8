# The two commands of the README: `make run` (the whole stack) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: browser run test demo demo-programme screenshots chaos bench-store bench-projections bench-dashboard bench-programme bench-codec bench-ledger bench-scale lint clean-state

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
test: $(VENV)/.installed-dev browser
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

# The dashboard's browser test drives Debian's Chromium: installed when missing (as root, with apt).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the dashboard's browser test"; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; \
	  else \
	    echo "chromium is missing and cannot be installed here (needs root and apt): the browser test will say so and skip"; \
	  fi; }

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

bench-dashboard: $(VENV)/.installed-bench
	$(PY) -m bench.dashboard

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
