# returnsd — two commands on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.yaml
STAMP  := $(VENV)/.installed-run
TESTSTAMP := $(VENV)/.installed-test

.PHONY: run test lint typecheck bench fuzz faults clean demo-data

# `make run` installs the runtime dependencies only; the test tools come with `make test`.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(TESTSTAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(TESTSTAMP)

## Start the daemon on config.yaml (SQLite under var/, demo actions loaded on the first run).
## `returnsd run` migrates the database itself; the demo is generated and imported only once
## (var/.demo-imported marks it), so a restart is just the daemon's own start.
run: $(STAMP)
	@test -e var/.demo-imported || { \
	  $(BIN)/python fixtures/demo/make_demo.py --out var/demo && \
	  $(BIN)/returnsd --config $(CONFIG) actions import var/demo/actions.csv \
	    --items var/demo/items.csv --if-empty && touch var/.demo-imported; }
	$(BIN)/returnsd --config $(CONFIG) run

## Run the whole test suite (plus ruff and mypy).
test: $(TESTSTAMP)
	$(BIN)/ruff check ingest channels parsers console returnsd scheduler.py tests bench
	$(BIN)/mypy
	$(BIN)/mypy tests
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(TESTSTAMP)
	$(BIN)/ruff check ingest channels parsers console returnsd scheduler.py tests bench
	$(BIN)/ruff format --check ingest channels parsers console returnsd scheduler.py tests bench

typecheck: $(TESTSTAMP)
	$(BIN)/mypy
	$(BIN)/mypy tests

bench: $(TESTSTAMP)
	$(BIN)/python bench/ingest.py --rows 1000000 --json

## Long fuzzing run (tens of thousands of examples per parser).
fuzz: $(TESTSTAMP)
	RETURNSD_LONG=1 $(BIN)/pytest tests/test_fuzz.py tests/test_bad_inputs.py -q --hypothesis-show-statistics $(PYTEST_ARGS)

## Fault injection, long form: 25 kill -9 rounds plus the other faults; prints FAULTS lines.
faults: $(TESTSTAMP)
	RETURNSD_LONG=1 $(BIN)/pytest tests/faults -s -q $(PYTEST_ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
