# One command per task. Every target builds its own virtual environment first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv test lint bench run loadtest clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,load,lint]'
	touch $(STAMP)

venv: $(STAMP)

# The browser tests drive Playwright's sync API, which keeps an event loop of its own
# running for the session; they run in their own pytest process after everything else.
test: $(STAMP)
	$(BIN)/python -m pytest -q --ignore=tests/browser
	$(BIN)/python -m pytest -q tests/browser

lint: $(STAMP)
	$(BIN)/ruff check engine persistence server loadtest tests
	$(BIN)/ruff format --check engine persistence server loadtest tests
	$(BIN)/mypy --strict engine persistence server

bench: $(STAMP)
	$(BIN)/python -m loadtest.bench all

loadtest: $(STAMP)
	$(BIN)/python -m loadtest.run --seconds 120 --users 200 --scale sweden --booked 0.3

run: $(STAMP)
	$(BIN)/tandtid serve --data ./data --seed-if-empty --open

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
