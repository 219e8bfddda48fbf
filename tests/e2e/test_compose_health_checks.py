"""The health checks of docker-compose.yml run against real processes started with the services' own commands
(Docker does not run here): each passes while its process works and fails once it is gone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from dunlink.devtools.processes import Process, ProcessGroup, free_port, log_ready, serving
from tests.support.compose import SERVICES, command, health_check
from tests.support.db import fresh_sqlite
from tests.support.stack import eventually, redis_base
from tests.support.vendors import vendors_toml

BIN = Path(sys.executable).parent
BROKER_DB = 14


@pytest.fixture
def environment(tmp_path: Path) -> Iterator[dict[str, str]]:
    """What a container of the compose file has, on this test's Redis database and SQLite file; ``HOSTNAME`` is
    set as Docker sets it, to the host name the processes see."""
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(vendors_toml({"acme": "a-test-ipn-secret-of-enough-length"}), encoding="utf-8")
    broker_url = f"{redis_base()}/{BROKER_DB}"
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    try:
        yield {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "HOSTNAME": socket.gethostname(), "DUNLINK_BROKER_URL": broker_url,
               "DUNLINK_DATABASE_URL": fresh_sqlite(tmp_path), "DUNLINK_VENDORS_FILE": str(vendors),
               "DUNLINK_OPS_TOKEN": "an-ops-token-the-health-checks-do-not-send"}
    finally:
        client.flushdb()
        client.close()


# A ping nobody answers waits out its whole --timeout; where the test expects no answer it waits this long
# instead (a live node answers within a second).
NO_ANSWER_WAIT = "3"


def check(name: str, environment: dict[str, str], *, port: int | None = None,
          expect_failure: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the service's health check as the container would (a published port moved to ``port``)."""
    args = health_check(SERVICES[name])
    if expect_failure:
        args = [arg.replace("--timeout 10", f"--timeout {NO_ANSWER_WAIT}") for arg in args]
    if port is not None:
        fixed = str(SERVICES[name]["ports"][0]).rsplit(":", 1)[1]
        args = [arg.replace(f"{fixed}/", f"{port}/").replace(f", {fixed})", f", {port})") for arg in args]
        assert any(str(port) in arg for arg in args), args
    return subprocess.run(args, env=environment, capture_output=True, text=True, timeout=60)


def passes(name: str, environment: dict[str, str], *, port: int | None = None) -> Callable[[], bool]:
    return lambda: check(name, environment, port=port).returncode == 0


@pytest.mark.redis
@pytest.mark.parametrize("name", ["worker-platform", "worker-email", "beat"])
def test_workers_and_beat_are_healthy_while_they_answer_and_unhealthy_once_stopped(
        name: str, environment: dict[str, str], tmp_path: Path) -> None:
    args = command(SERVICES[name])
    ready = log_ready("ready.") if args[0] == "worker" else log_ready("beat: Starting")
    with ProcessGroup(env=environment, log_dir=tmp_path / "logs", cwd=tmp_path) as group:
        process = group.start(name, args, ready=ready, timeout=60)
        # Beat's remote-control node joins the broker a moment after it starts.
        eventually(passes(name, environment), timeout=30, what=f"{name}'s health check to pass")
        answered = check(name, environment)
        assert answered.returncode == 0, answered.stderr
        assert "pong" in answered.stdout
        _stop(group, process)

    failed = check(name, environment, expect_failure=True)
    assert failed.returncode != 0
    assert "No nodes replied" in failed.stderr


@pytest.mark.redis
def test_a_worker_does_not_answer_for_another(environment: dict[str, str], tmp_path: Path) -> None:
    """The ping names the node: an email worker running does not make the platform worker look healthy."""
    with ProcessGroup(env=environment, log_dir=tmp_path / "logs", cwd=tmp_path) as group:
        group.start("worker-email", command(SERVICES["worker-email"]), ready=log_ready("ready."), timeout=60)
        eventually(passes("worker-email", environment), timeout=30, what="the email worker's health check")
        assert check("worker-platform", environment, expect_failure=True).returncode != 0


@pytest.mark.redis
@pytest.mark.parametrize("name", ["api", "sandbox"])
def test_servers_are_healthy_while_they_serve_and_unhealthy_once_stopped(
        name: str, environment: dict[str, str], tmp_path: Path) -> None:
    """The api's check needs no ops token (the environment has one): /healthz answers anyone."""
    port = free_port()
    args = [arg if arg != "0.0.0.0" else "127.0.0.1" for arg in command(SERVICES[name])]  # noqa: S104
    args[args.index("--port") + 1] = str(port)
    probe = "/healthz" if name == "api" else "/sandbox/requests"
    with ProcessGroup(env=environment, log_dir=tmp_path / "logs", cwd=tmp_path) as group:
        process = group.start(name, args, ready=serving(f"http://127.0.0.1:{port}{probe}"), timeout=60)
        answered = check(name, environment, port=port)
        assert answered.returncode == 0, answered.stderr
        _stop(group, process)

    assert check(name, environment, port=port).returncode != 0


def _stop(group: ProcessGroup, process: Process) -> None:
    group.stop(process.name)
    assert not process.alive()
