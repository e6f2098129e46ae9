# One task runner for developers and CI: make test, make lint, make proto, make bench, make run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install proto lint test test-fast bench run clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv with everything needed

proto: $(STAMP) ## regenerate sdk/weir/v1 from proto/
	$(BIN)/python scripts/gen_proto.py

lint: $(STAMP) ## ruff, mypy and the import boundaries
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint test-fast ## lint, then the whole suite (Postgres tests need WEIR_TEST_DATABASE_URL)

test-fast: $(STAMP) ## the suite without lint: in parallel, then the fault-injection suite alone
	$(BIN)/pytest -n 2 -m "not faults" $(PYTEST_ARGS)
	$(BIN)/pytest -m faults $(PYTEST_ARGS)

bench: $(STAMP) ## run the benchmarks and write bench/RESULTS.md
	$(BIN)/python -m bench

run: $(STAMP) ## weir standalone with the example DAGs
	$(BIN)/weir standalone --dags examples/dags

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
