# Two commands on a fresh machine (README): `make demo` runs the main job, `make check` the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo check lint bench clean deploy-files

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m demo $(ARGS)

# ruff and mypy run inside the test suite (tests/test_static.py), so this is the one test command.
check: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

# Shell completions and man pages from the CLI definitions (tests/test_deploy.py checks they are current).
deploy-files: setup
	$(PY) deploy/generate.py

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) demo-data .mypy_cache .ruff_cache .pytest_cache .hypothesis
