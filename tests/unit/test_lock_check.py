"""The set-up refuses an environment that misses what pyproject.toml asks for, its dev extra included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_lock_check(requires: list[str], installed: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """.ci/lock_check.py dev, against a stand-in for the installed packages' metadata."""
    stub = f"""
import runpy, sys
from importlib import metadata
installed = {installed!r}
def version(name):
    if name not in installed:
        raise metadata.PackageNotFoundError(name)
    return installed[name]
metadata.requires = lambda name: {requires!r}
metadata.version = version
sys.argv = ["lock_check.py", "dev"]
runpy.run_path({str(ROOT / ".ci" / "lock_check.py")!r}, run_name="__main__")
"""
    return subprocess.run([sys.executable, "-c", stub], capture_output=True, text=True, timeout=60, check=False)


def test_an_environment_that_meets_every_requirement_passes() -> None:
    result = run_lock_check(["celery>=5.5", 'pytest>=8; extra == "dev"', 'py-spy>=0.3; extra == "bench"'],
                            {"celery": "5.6.0", "pytest": "8.4.1"})
    assert result.returncode == 0, result.stderr


def test_a_dev_requirement_the_lock_does_not_meet_fails_and_says_what_to_run() -> None:
    result = run_lock_check(["celery>=5.5", 'pytest>=10; extra == "dev"', 'mypy>=1.10; extra == "dev"'],
                            {"celery": "5.6.0", "pytest": "8.4.1"})
    assert result.returncode == 1
    assert 'pytest>=10; extra == "dev": 8.4.1 installed' in result.stderr
    assert 'mypy>=1.10; extra == "dev": not installed' in result.stderr
    assert "run `make lock`" in result.stderr
