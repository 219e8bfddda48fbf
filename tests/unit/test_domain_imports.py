"""The domain stays pure: importing it loads no database, broker, HTTP, template or wiring code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("sqlalchemy", "celery", "kombu", "httpx", "jinja2", "babel", "fastapi", "starlette", "adapters",
             "workers")
PROBE = (
    "import domain, domain.money, domain.plans, domain.case, domain.policy; import importlib, json, pkgutil, sys; "
    "[importlib.import_module(m.name) for m in pkgutil.iter_modules(domain.__path__, 'domain.')]; "
    "print(json.dumps(sorted(sys.modules)))"
)


def test_importing_the_domain_loads_no_infrastructure() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=True)
    loaded = json.loads(result.stdout)
    assert "domain.case" in loaded, "the probe must really have imported the domain"
    offending = sorted(name for name in loaded if name.split(".")[0] in FORBIDDEN)
    assert offending == []
