# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SOAK_ROUNDS ?= 10

.PHONY: setup demo test test-fast lint format bench soak sandbox-image clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m entrypoints demo --non-interactive

test: setup
	$(PY) -m pytest -q -ra --durations=15

test-fast: setup
	$(PY) -m pytest -q -m "not e2e"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy switchboard workflows activities api chat_gateway entrypoints testkit tests bench
	$(VENV)/bin/lint-imports
	$(PY) -m testkit.sizes

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) -m bench

# The long fault suite: every scenario of tests/faults for SOAK_ROUNDS rounds; writes
# docs/reliability.md (make soak SOAK_ROUNDS=50 for hundreds of kills).
soak: setup
	$(PY) -m tests.faults.soak --rounds $(SOAK_ROUNDS)

sandbox-image:
	bash infra/sandbox/build-image.sh

clean:
	rm -rf .switchboard .pytest_cache .mypy_cache .ruff_cache
