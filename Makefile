# visionops developer entry points. Every target creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The quickstart logs to a local SQLite store unless MLFLOW_TRACKING_URI says otherwise.
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db

.PHONY: install quickstart test lint format bench-overhead clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/visionops train --recipe quickstart
	$(BIN)/visionops evaluate --model-uri models:/vision-classifier/latest

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench-overhead: $(STAMP)
	$(BIN)/python benchmarks/train_overhead.py

clean:
	rm -rf outputs mlruns mlartifacts mlflow.db .pytest_cache
