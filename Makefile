# The README's two commands: `make run` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: install run test lint format dryrun clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,verl,slurm]'
	touch $(STAMP)

## run: the whole workflow on the embedded default (config/config.yaml)
run: install
	$(BIN)/snakemake --cores $(CORES)

## test: the full test suite (unit, engine, workflow)
test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/snakefmt --check workflow rules
	$(BIN)/snakemake --lint --cores 1

format: install
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/snakefmt workflow rules

dryrun: install
	$(BIN)/snakemake -n --cores $(CORES)

clean:
	rm -rf results .snakemake
