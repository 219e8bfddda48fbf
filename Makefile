# Every target creates the virtualenv from pyproject.toml when needed, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_AUDIT ?= $(BIN)/pip-audit

.PHONY: demo test lint typecheck unit audit clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dunlink demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy domain adapters workers

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

test: $(STAMP) lint typecheck
	$(BIN)/pytest -q

# pip-audit of the installed environment (dunlink itself, installed editable, is left out). A known
# vulnerability fails the target. The vulnerability data comes from OSV, or else from PyPI's JSON API; when
# neither answers, one WARNING line says the dependencies were not audited and the target passes, so an
# unreachable service alone never blocks CI. pip-audit failing for any other reason fails the target.
define AUDIT_PY
import json, os, subprocess, sys, tempfile
network = ("ConnectionError", "NameResolution", "Max retries", "timed out", "Timeout", "SSLError",
           "network may be blocking", "Temporary failure", "Connection refused", "Name or service not known")
notes = []
for service in ("osv", "pypi"):
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "audit.json")
        done = subprocess.run([os.environ["PIP_AUDIT"], "--skip-editable", "--progress-spinner", "off",
                               "--timeout", "20", "-s", service, "-f", "json", "-o", out],
                              capture_output=True, text=True)
        report = json.load(open(out)) if os.path.exists(out) and os.path.getsize(out) else None
    if report is None:
        if any(word in done.stderr for word in network):
            notes.append(service + ": unreachable")
            continue
        sys.exit("pip-audit failed (exit %d): %s" % (done.returncode, done.stderr.strip()[-2000:]))
    dependencies = report["dependencies"]
    found = [(dep, vuln) for dep in dependencies for vuln in dep.get("vulns", [])]
    for dep, vuln in found:
        aliases = " (%s)" % ", ".join(vuln["aliases"]) if vuln.get("aliases") else ""
        fixed = ", ".join(vuln.get("fix_versions") or []) or "no release yet"
        print("%s %s: %s%s, fixed in %s" % (dep["name"], dep["version"], vuln["id"], aliases, fixed))
    if found:
        sys.exit("pip-audit (%s): %d known vulnerabilities in the installed dependencies" % (service, len(found)))
    audited = [dep for dep in dependencies if "skip_reason" not in dep]
    if audited:
        skipped = len(dependencies) - len(audited)
        print("pip-audit (%s): no known vulnerabilities in %d packages%s" % (
            service, len(audited), "; %d not known to the service" % skipped if skipped else ""))
        sys.exit(0)
    notes.append(service + ": knows none of the %d packages" % len(dependencies))
print("WARNING: pip-audit could not reach a vulnerability service (%s): dependencies NOT audited" % "; ".join(notes))
endef
export AUDIT_PY

audit: $(STAMP)
	@PIP_AUDIT='$(PIP_AUDIT)' $(BIN)/python -c "$$AUDIT_PY"

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
