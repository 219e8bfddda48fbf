"""Flower watching a running dunlink: its tasks by name, arguments that are ids only, behind basic auth."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from dunlink.devtools.processes import free_port, stop_process
from tests.support.db import fresh_sqlite
from tests.support.stack import Stack, eventually, order_json, running_stack

AUTH = ("user", "pass")


@contextmanager
def flower(stack: Stack, log: Path) -> Iterator[str]:
    """``celery -A workers flower`` on the stack's Redis, as docker-compose runs it; yields its URL."""
    port = free_port()
    celery = Path(sys.executable).parent / "celery"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(celery), "-A", "workers", "flower", f"--port={port}", f"--broker={stack.broker_url}",
             "--address=127.0.0.1", f"--basic-auth={AUTH[0]}:{AUTH[1]}"],
            env={**stack.env, "DUNLINK_BROKER_URL": stack.broker_url}, cwd=stack.root, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: process.poll() is not None or _answers(f"{url}/healthcheck"), timeout=30,
                   what="Flower to answer")
        assert process.poll() is None, log.read_text(errors="replace")
        yield url
    finally:
        stop_process(process, grace=10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def tasks(url: str, name: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{url}/api/tasks", params={"taskname": name} if name else {}, auth=AUTH, timeout=5)
    assert response.status_code == 200, response.text
    found: dict[str, dict[str, Any]] = response.json()
    return found


def succeeded(url: str, name: str) -> list[dict[str, Any]]:
    return [task for task in tasks(url, name).values() if task["state"] == "SUCCESS"]


@pytest.mark.redis
def test_flower_shows_dunlink_tasks_with_ids_only_behind_basic_auth(tmp_path: Path) -> None:
    with running_stack(tmp_path / "stack", fresh_sqlite(tmp_path)) as stack, \
            flower(stack, tmp_path / "flower.log") as url:
        assert httpx.get(f"{url}/api/tasks", timeout=5).status_code == 401
        assert httpx.get(f"{url}/api/tasks", auth=("user", "wrong"), timeout=5).status_code == 401
        # Beat wakes the relay every 2 s: once Flower has seen one run, it is receiving the workers' events.
        eventually(lambda: succeeded(url, "dunlink.relay"), timeout=30, what="Flower to see a relay run")

        stack.seed(order_json("CC-1001", first_name="Anna", email="anna@example.com"))
        assert stack.fail("CC-1001", 3)["delivery"]["status"] == 200
        case = eventually(lambda: stack.case_in("CC-1001", "awaiting_payment"), what="the link to be sent")

        # The event's task opened the case and ran its platform steps; Flower shows it with the event id alone.
        events = eventually(lambda: succeeded(url, "dunlink.process_event"), timeout=30,
                            what="Flower to show dunlink.process_event")
        assert all(isinstance(arg, int) for task in events for arg in ast.literal_eval(task["args"]))
        assert all(task["worker"] for task in events)
        # The email went out from the email queue's task, which Flower shows with the case id alone.
        emailed = eventually(lambda: succeeded(url, "dunlink.send_email"), timeout=30,
                             what="Flower to show dunlink.send_email")
        assert all(ast.literal_eval(task["args"]) == [case.id] for task in emailed)
        assert all(task["worker"] for task in emailed)

        everything = json.dumps(httpx.get(f"{url}/api/tasks", auth=AUTH, timeout=5).json())
        for personal in ("anna@example.com", "Anna", "Meier"):
            assert personal not in everything
