# returnsd — two commands on a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.yaml
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck bench fuzz faults clean demo-data

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## Start the daemon on config.yaml (SQLite under var/, demo actions loaded).
run: $(STAMP)
	$(BIN)/returnsd --config $(CONFIG) db upgrade
	$(BIN)/python fixtures/demo/make_demo.py --out var/demo
	$(BIN)/returnsd --config $(CONFIG) actions import var/demo/actions.csv --items var/demo/items.csv --if-empty
	$(BIN)/returnsd --config $(CONFIG) run

## Run the whole test suite (plus ruff and mypy).
test: $(STAMP)
	$(BIN)/ruff check ingest channels parsers returnsd scheduler.py tests bench
	$(BIN)/mypy
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check ingest channels parsers returnsd scheduler.py tests bench
	$(BIN)/ruff format --check ingest channels parsers returnsd scheduler.py tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/ingest.py --rows 1000000 --json

## Long fuzzing run (tens of thousands of examples per parser).
fuzz: $(STAMP)
	RETURNSD_LONG=1 $(BIN)/pytest tests/test_fuzz.py tests/test_bad_inputs.py -q --hypothesis-show-statistics $(PYTEST_ARGS)

## Fault injection, long form: 25 kill -9 rounds plus the other faults; prints FAULTS lines.
faults: $(STAMP)
	RETURNSD_LONG=1 $(BIN)/pytest tests/faults -s -q $(PYTEST_ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
