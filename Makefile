# One entry point per task. `make install && make test` is all a fresh clone needs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
export WANDB_MODE ?= offline

.PHONY: install test bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip check

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python experiments/bench.py

lint: install
	$(BIN)/python -m compileall -q anon experiments tests

clean:
	rm -rf outputs multirun .pytest_cache
