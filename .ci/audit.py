"""pip-audit of the locked dependencies (requirements.lock and requirements-dev.lock): the exact versions CI and
``make`` install, the dev tools included (they run in CI with its credentials).

A known vulnerability fails. The vulnerability data comes from OSV, or else from PyPI's JSON API; when
neither answers, one WARNING line says the dependencies were not audited and the audit passes, so an
unreachable service alone never blocks CI. pip-audit failing for any other reason fails.

    .venv/bin/python .ci/audit.py [requirements.lock requirements-dev.lock]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

NETWORK = ("ConnectionError", "NameResolution", "Max retries", "timed out", "Timeout", "SSLError",
           "network may be blocking", "Temporary failure", "Connection refused", "Name or service not known")
# The virtualenv's pip-audit, or the one PIP_AUDIT names.
PIP_AUDIT = os.environ.get("PIP_AUDIT") or str(Path(sys.executable).with_name("pip-audit"))


def audit(locks: list[Path], service: str) -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON report of ``locks`` against ``service``, or None and pip-audit's error output."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "audit.json"
        # --no-deps --disable-pip: the lock's exact versions, nothing resolved or installed.
        files = [part for lock in locks for part in ("-r", str(lock))]
        done = subprocess.run([PIP_AUDIT, *files, "--no-deps", "--disable-pip", "--progress-spinner", "off",
                               "--timeout", "20", "-s", service, "-f", "json", "-o", str(out)],
                              capture_output=True, text=True, check=False)
        if out.exists() and out.stat().st_size:
            return json.loads(out.read_text(encoding="utf-8")), done.stderr
    return None, f"(exit {done.returncode}) {done.stderr.strip()[-2000:]}"


def main() -> int:
    locks = [Path(name) for name in sys.argv[1:] or ["requirements.lock", "requirements-dev.lock"]]
    for lock in locks:
        if not lock.is_file():
            print(f"audit: {lock} not found", file=sys.stderr)
            return 2
    lock = " and ".join(str(lock) for lock in locks)
    notes = []
    for service in ("osv", "pypi"):
        report, errors = audit(locks, service)
        if report is None:
            if any(word in errors for word in NETWORK):
                notes.append(f"{service}: unreachable")
                continue
            print(f"pip-audit failed: {errors}", file=sys.stderr)
            return 1
        dependencies: list[dict[str, Any]] = report["dependencies"]
        found = [(dep, vuln) for dep in dependencies for vuln in dep.get("vulns", [])]
        for dep, vuln in found:
            aliases = f" ({', '.join(vuln['aliases'])})" if vuln.get("aliases") else ""
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no release yet"
            print(f"{dep['name']} {dep['version']}: {vuln['id']}{aliases}, fixed in {fixed}")
        if found:
            print(f"pip-audit ({service}): {len(found)} known vulnerabilities in {lock}", file=sys.stderr)
            return 1
        audited = [dep for dep in dependencies if "skip_reason" not in dep]
        if audited:
            skipped = len(dependencies) - len(audited)
            print(f"pip-audit ({service}): no known vulnerabilities in {len(audited)} packages of {lock}"
                  + (f"; {skipped} not known to the service" if skipped else ""))
            return 0
        notes.append(f"{service}: knows none of the {len(dependencies)} packages")
    print(f"WARNING: pip-audit could not reach a vulnerability service ({'; '.join(notes)}): "
          f"dependencies NOT audited")
    return 0


if __name__ == "__main__":
    sys.exit(main())
