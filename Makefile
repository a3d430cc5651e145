# semantic-emergence: the two commands are `make demo` and `make test` (`make test-fast` while
# working: every test that does not run the workflow end to end).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= all

.PHONY: env demo test test-fast lint bench clean-results

# The environment: pinned in pyproject.toml (torch==2.14.1, torchvision==0.29.1), installed
# once into .venv and re-installed whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[demo,dev]"
	touch $@

env: $(VENV)/.installed

demo: env
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml

test: lint
	$(BIN)/python -m pytest

# The workflow's lint (Snakemake's best practices), the package's (ruff) and the rule files'
# format (snakefmt: `$(BIN)/snakefmt workflow/ Snakefile` rewrites them).
lint: env
	$(BIN)/snakemake --lint
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check workflow/ Snakefile

# The tests marked slow are those that use an end-to-end fixture (tests/conftest.py).
test-fast: env
	$(BIN)/python -m pytest -m "not slow"

bench: env
	$(BIN)/python bench/bench.py

clean-results:
	rm -rf results/* .snakemake
