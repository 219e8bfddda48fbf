# Every target creates the virtualenv from requirements.lock when needed, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_AUDIT ?= $(BIN)/pip-audit

.PHONY: demo test lint typecheck unit audit lock clean

# The exact versions of requirements.lock, then dunlink itself; pip check and lock_check.py fail if
# pyproject.toml (its dev extra included) asks for something the lock does not satisfy (run `make lock`).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	$(BIN)/python .ci/lock_check.py dev
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dunlink demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy domain adapters workers platforms

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

test: $(STAMP) lint typecheck
	$(BIN)/pytest -q

# pip-audit of requirements.lock, the exact versions installed above (.ci/audit.py says how it decides).
audit: $(STAMP)
	@PIP_AUDIT='$(PIP_AUDIT)' $(BIN)/python .ci/audit.py requirements.lock

# Re-resolve pyproject.toml's ranges in a throw-away virtualenv and pin the result in requirements.lock.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	head -n 2 requirements.lock > requirements.lock.new
	.lock-venv/bin/python -m pip freeze --exclude-editable >> requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
