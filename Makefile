# Every target creates the virtualenv from the locks when needed, so a fresh clone needs nothing else.
# `make demo` installs what dunlink runs on (requirements.lock); the targets that test, lint, type-check or
# audit add the development tools (requirements-dev.lock) to the same virtualenv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
STAMP := $(VENV)/.installed
PIP_AUDIT ?= $(BIN)/pip-audit
LOCKS := requirements.lock requirements-dev.lock

.PHONY: demo test lint typecheck unit integration e2e audit lock clean

# The exact versions of requirements.lock, then dunlink itself; pip check and lock_check.py fail if
# pyproject.toml asks for something the lock does not satisfy (run `make lock`).
$(RUNTIME): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	$(BIN)/python .ci/lock_check.py
	touch $@

# The development tools on top, at the versions of requirements-dev.lock; lock_check.py also fails if the two
# locks overlap or if requirements.lock holds anything dunlink does not need at run time.
$(STAMP): $(RUNTIME) requirements-dev.lock
	$(BIN)/python -m pip install --quiet -r requirements.lock -r requirements-dev.lock
	$(BIN)/python -m pip check
	$(BIN)/python .ci/lock_check.py dev --locks $(LOCKS)
	touch $@

demo: $(RUNTIME)
	$(BIN)/dunlink demo

# ruff (style, bugs, complexity), then the rooms' import contracts of .importlinter.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy domain adapters platforms workers dunlink

# One tier at a time: the domain and rendering alone (seconds); the adapters on SQLite, PostgreSQL, Redis and a real
# SMTP server (minutes); the processes end to end (the longest).
unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

integration: $(STAMP)
	$(BIN)/pytest tests/integration -q

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e -q

test: $(STAMP) lint typecheck
	$(BIN)/pytest -q

# pip-audit of both locks, the exact versions installed above (.ci/audit.py says how it decides).
audit: $(STAMP)
	@PIP_AUDIT='$(PIP_AUDIT)' $(BIN)/python .ci/audit.py $(LOCKS)

# Re-resolve pyproject.toml's ranges in a throw-away virtualenv: first what dunlink runs on, pinned in
# requirements.lock; then the dev extra with those versions fixed, and what it adds pinned in requirements-dev.lock.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e .
	head -n 2 requirements.lock > requirements.lock.new
	.lock-venv/bin/python -m pip freeze --exclude-editable >> requirements.lock.new
	.lock-venv/bin/python -m pip install --quiet -c requirements.lock.new -e '.[dev]'
	head -n 2 requirements-dev.lock > requirements-dev.lock.new
	.lock-venv/bin/python -m pip freeze --exclude-editable | grep -v -x -F -f requirements.lock.new \
		>> requirements-dev.lock.new
	mv requirements.lock.new requirements.lock
	mv requirements-dev.lock.new requirements-dev.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
