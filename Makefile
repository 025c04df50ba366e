# One command per task. Every target builds its own virtual environment first, with the
# versions in constraints.txt (the ones the suite last passed with; `make constraints` renews it).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LATEST := .venv-latest

.PHONY: venv test lint bench run cluster loadtest screenshots lighthouse test-latest constraints clean

$(STAMP): pyproject.toml constraints.txt
	@PYTHON=$(PYTHON) scripts/system-packages venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,load,lint]'
	touch $(STAMP)

venv: $(STAMP)

# The browser tests drive Playwright's sync API, which keeps an event loop of its own
# running for the session; they run in their own pytest process after everything else.
# Both runs add to one coverage file; the per-package table is printed at the end.
test: $(STAMP)
	@PYTHON=$(PYTHON) scripts/system-packages test
	TANDTID_TEST_SWEDEN=$${TANDTID_TEST_SWEDEN:-1} $(BIN)/python -m pytest -q --cov --cov-report= --ignore=tests/browser
	$(BIN)/python -m pytest -q --cov --cov-append --cov-report= tests/browser
	@$(BIN)/python scripts/coverage_by_package.py

lint: $(STAMP)
	$(BIN)/ruff check engine persistence server loadtest tests scripts
	$(BIN)/ruff format --check engine persistence server loadtest tests scripts
	$(BIN)/mypy --strict engine persistence server loadtest tests/support

# The non-browser suite against the newest release of every dependency, in its own venv,
# so an upstream release that breaks us is seen the day it appears. It prints which
# versions differ from constraints.txt and a loud verdict; .ci/run reports it without failing.
test-latest:
	@PYTHON=$(PYTHON) scripts/system-packages test
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade pip
	$(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager -e '.[test,load]'
	$(LATEST)/bin/python scripts/test_latest.py

# Pin what the working venv has now (after the suite passed with it).
constraints: $(STAMP)
	echo '# The versions `make test` last passed with; `make constraints` renews this file.' > constraints.txt.new
	$(BIN)/pip freeze --exclude-editable | sed '/^-e /d' >> constraints.txt.new
	mv constraints.txt.new constraints.txt

# The README's screenshots: every screen, phone and desktop, from a fresh Sweden seed (--booked 0.3) into
# docs/screenshots. DATA=<seeded dir> copies that store instead of seeding (the dir is left as it is).
screenshots: $(STAMP)
	@PYTHON=$(PYTHON) scripts/system-packages test
	$(BIN)/python scripts/screenshots.py $(if $(DATA),--data $(DATA))

# Lighthouse 12 (npx, Debian's chromium) against a running server, e.g. one seeded with --scale sweden:
#   make lighthouse URL=http://127.0.0.1:8000
# Needs node and npm (scripts/system-packages installs them on Debian when run as root; only this target does).
lighthouse:
	@PYTHON=$(PYTHON) scripts/system-packages lighthouse
	$(PYTHON) scripts/lighthouse.py $(or $(URL),http://127.0.0.1:8000) --pages / /clinic/AB-c1 /kiosk/AB-c1

bench: $(STAMP)
	@PYTHON=$(PYTHON) scripts/system-packages bench
	$(BIN)/python -m loadtest.bench all

loadtest: $(STAMP)
	$(BIN)/python -m loadtest.run --seconds 120 --users 200 --scale sweden --booked 0.3

run: $(STAMP)
	@echo "The tandtid command is $(BIN)/tandtid (or run '. $(BIN)/activate' to have it on PATH)."
	$(BIN)/tandtid serve --data ./data --seed-if-empty --scale sweden --booked 0.3 --open

# Redis (AOF, appendfsync always), three nodes and nginx in front on http://127.0.0.1:8000,
# everything in ./cluster-data; all of Sweden seeded on the first start only. Ctrl-C stops it all.
# Needs redis-server and nginx (scripts/system-packages cluster). E.g. make cluster SCALE=small
SCALE ?= sweden
cluster: $(STAMP)
	@PYTHON=$(PYTHON) scripts/system-packages cluster
	$(BIN)/python -m loadtest.cluster --dir ./cluster-data --scale $(SCALE) --booked 0.3

clean:
	rm -rf $(VENV) $(LATEST) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
