# Two commands on a fresh machine (README): `make demo` runs the main job, `make check` the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo check lint bench clean deploy-files deb
ARCH ?= amd64

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m demo $(ARGS)

# ruff and mypy run inside the test suite (tests/test_static.py), so this is the one test command. Two
# workers, a test file each at a time (its module and session fixtures built once per worker): most tests
# wait on brokers, daemons, disks and containers rather than CPUs (17 minutes in one process, ~10 in two).
check: setup
	$(PY) -m pytest -n 2 --dist loadfile

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/mypy

# Shell completions and man pages from the CLI definitions (tests/test_deploy.py checks they are current).
deploy-files: setup
	$(PY) deploy/generate.py

# The Debian package for ARCH (amd64 or arm64) in dist/ (deploy/debian/build.py; docs/operations.md).
deb: setup
	$(PY) deploy/debian/build.py --arch $(ARCH) --out dist

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) demo-data dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
