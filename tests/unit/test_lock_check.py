"""The set-up refuses an environment that misses what pyproject.toml asks for, its dev extra included, and locks
that do not split what dunlink runs on (``make demo``) from the development tools (``make test``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DEV_TOOLS = ("mypy", "ruff", "pip-audit", "hypothesis", "pytest", "pytest-timeout", "pyyaml")


def run_lock_check(requires: list[str], installed: dict[str, str], *args: str,
                   graph: dict[str, list[str]] | None = None) -> subprocess.CompletedProcess[str]:
    """.ci/lock_check.py dev ``args``, against a stand-in for the installed packages' metadata: dunlink requires
    ``requires``, and the packages of ``graph`` what it names."""
    graph = {"dunlink": requires, **(graph or {})}
    stub = f"""
import runpy, sys
from importlib import metadata
installed = {installed!r}
graph = {graph!r}
def version(name):
    if name not in installed:
        raise metadata.PackageNotFoundError(name)
    return installed[name]
metadata.requires = lambda name: graph.get(name, [])
metadata.version = version
sys.argv = ["lock_check.py", "dev", *{list(args)!r}]
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


# -- the split between the runtime lock and the dev lock ------------------------------------------------------

REQUIRES = ["celery[redis]>=5.5", 'pytest>=8; extra == "dev"']
GRAPH = {"celery": ["kombu>=5", 'redis>=5; extra == "redis"', 'pymongo; extra == "mongodb"'],
         "kombu": ["vine>=5"], "pytest": ["pluggy>=1", "iniconfig"]}
INSTALLED = {"celery": "5.6.0", "pytest": "8.4.1"}
RUNTIME = ["celery==5.6.0", "kombu==5.6.0", "redis==6.0.0", "vine==5.1.0"]
DEV = ["iniconfig==2.1.0", "pluggy==1.6.0", "pytest==8.4.1"]


def split(tmp_path: Path, runtime: list[str], dev: list[str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "runtime.lock").write_text("# header\n" + "\n".join(runtime) + "\n", encoding="utf-8")
    (tmp_path / "dev.lock").write_text("# header\n" + "\n".join(dev) + "\n", encoding="utf-8")
    return run_lock_check(REQUIRES, INSTALLED, "--locks", str(tmp_path / "runtime.lock"), str(tmp_path / "dev.lock"),
                          graph=GRAPH)


def test_locks_split_at_what_dunlink_needs_at_run_time_pass(tmp_path: Path) -> None:
    result = split(tmp_path, RUNTIME, DEV)
    assert result.returncode == 0, result.stderr


def test_a_dev_tool_in_the_runtime_lock_fails_naming_it(tmp_path: Path) -> None:
    result = split(tmp_path, [*RUNTIME, "pluggy==1.6.0"], [line for line in DEV if not line.startswith("pluggy")])
    assert result.returncode == 1
    runtime = tmp_path / "runtime.lock"
    assert f"pluggy==1.6.0: in {runtime}, but dunlink does not need it at run time" in result.stderr
    assert "run `make lock`" in result.stderr


def test_a_runtime_package_left_to_the_dev_lock_or_pinned_twice_fails(tmp_path: Path) -> None:
    moved = split(tmp_path, [line for line in RUNTIME if not line.startswith("vine")], [*DEV, "vine==5.1.0"])
    assert moved.returncode == 1
    assert f"vine: dunlink needs it at run time, but {tmp_path / 'runtime.lock'} does not pin it" in moved.stderr

    twice = split(tmp_path, RUNTIME, [*DEV, "kombu==5.6.0"])
    assert twice.returncode == 1
    assert f"kombu==5.6.0: pinned in both {tmp_path / 'runtime.lock'} and {tmp_path / 'dev.lock'}" in twice.stderr


def test_the_project_locks_are_split_as_they_should_be() -> None:
    """This virtualenv's metadata against the committed locks, as `make test`'s set-up checks them."""
    result = subprocess.run([sys.executable, ".ci/lock_check.py", "dev", "--locks", "requirements.lock",
                             "requirements-dev.lock"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    runtime = {canonicalize_name(Requirement(line).name) for line in
               (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines() if line and line[0] != "#"}
    assert runtime.isdisjoint(DEV_TOOLS)


def make_dry_run(target: str) -> str:
    """The commands ``make target`` runs on a fresh clone (-B: as if nothing were built yet; -n: none run)."""
    result = subprocess.run(["make", "--no-print-directory", "-n", "-B", target], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    return result.stdout


def test_make_demo_installs_the_runtime_lock_alone_and_make_test_adds_the_dev_tools() -> None:
    demo, test = make_dry_run("demo"), make_dry_run("test")

    assert "pip install --quiet -r requirements.lock\n" in demo
    assert "requirements-dev.lock" not in demo
    assert demo.rstrip().endswith(".venv/bin/dunlink demo")
    assert "pip install --quiet -r requirements.lock -r requirements-dev.lock" in test
    assert "lock_check.py dev --locks requirements.lock requirements-dev.lock" in test
    assert test.rstrip().endswith(".venv/bin/pytest -q")
