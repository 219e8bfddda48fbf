"""The ``dunlink`` command of this virtualenv, run in a subprocess as a user or an operator runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import pytest

DUNLINK = Path(sys.executable).parent / "dunlink"


def run_to_end(command: str, *args: str, cwd: Path, env: Mapping[str, str], timeout: float,
               stop: signal.Signals, grace: float) -> subprocess.CompletedProcess[str]:
    """Run ``dunlink command args`` until it exits. On a hang, send ``stop`` so it stops what it started, kill
    its process group if it is still there ``grace`` seconds later, and fail the test with what it printed."""
    process = subprocess.Popen([str(DUNLINK), command, *args], cwd=cwd, env=dict(env), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(stop)
        try:
            out, err = process.communicate(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
        pytest.fail(f"dunlink {command} still running after {timeout:.0f}s:\n{out}\n{err}")
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def due(at: datetime, *, env: Mapping[str, str], cwd: Path) -> str:
    """``dunlink due --now at``: everything due at that instant, run once in its own process; what it printed."""
    result = subprocess.run([str(DUNLINK), "due", "--now", at.isoformat()], env=env, cwd=cwd, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
