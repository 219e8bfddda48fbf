"""A rehearsal's IPNs count in the rehearsal and nowhere else: the sandbox, run as compose runs it (rehearsal
vendors file and settings), delivers to an api on the rehearsal's settings (deploy/rehearsal.yml) and is
accepted, and to an api on production's settings (.env.example, vendors.example.toml) and is refused."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from sqlalchemy import func, select

from adapters.db.engine import make_engine
from adapters.db.tables import InboxEvent
from dunlink.devtools.processes import ProcessGroup, api_command, free_port, serving
from tests.support.compose import ROOT, SERVICES, command, env_example, rehearsal_env
from tests.support.db import fresh_sqlite
from tests.support.stack import order_json, redis_base

BROKER_DB = 13


@pytest.fixture
def broker_url() -> Iterator[str]:
    url = f"{redis_base()}/{BROKER_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def production() -> dict[str, str]:
    """.env.example with every change-me replaced, as an operator's .env, and the production vendors file."""
    filled = {name: value.replace("change-me", "a-long-secret-chosen-by-the-operator")
              for name, value in env_example().items()}
    return {**filled, "DUNLINK_VENDORS_FILE": str(ROOT / "vendors.example.toml")}


def rehearsal() -> dict[str, str]:
    """deploy/rehearsal.env with vendors.rehearsal.toml, as deploy/rehearsal.yml gives every dunlink service."""
    return {**rehearsal_env(), "DUNLINK_VENDORS_FILE": str(ROOT / "vendors.rehearsal.toml")}


def stored(database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(InboxEvent)) or 0)
    finally:
        engine.dispose()


@pytest.mark.redis
@pytest.mark.parametrize(("settings", "answer"), [(rehearsal, 200), (production, 401)],
                         ids=["rehearsal api", "production api"])
def test_the_sandboxs_ipns_are_accepted_by_the_rehearsal_and_refused_by_production(
        settings: Callable[[], dict[str, str]], answer: int, broker_url: str, tmp_path: Path) -> None:
    database_url = fresh_sqlite(tmp_path)
    base = {key: value for key, value in os.environ.items() if not key.startswith("DUNLINK_")}
    api_port, sandbox_port = free_port(), free_port()
    api_env = {**base, **settings(), "DUNLINK_DATABASE_URL": database_url, "DUNLINK_BROKER_URL": broker_url}

    # The sandbox exactly as compose configures it: its own env file and the rehearsal vendors file only.
    sandbox = SERVICES["sandbox"]
    sandbox_env = {**base, **rehearsal_env(),
                   "DUNLINK_VENDORS_FILE": str(ROOT / "vendors.rehearsal.toml")}
    assert sandbox["environment"]["DUNLINK_VENDORS_FILE"].endswith("/vendors.rehearsal.toml")
    args = command(sandbox)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(sandbox_port)
    args[args.index("--webhook-base") + 1] = f"http://127.0.0.1:{api_port}"

    with ProcessGroup(env=api_env, log_dir=tmp_path / "logs", cwd=tmp_path) as apis, \
            ProcessGroup(env=sandbox_env, log_dir=tmp_path / "logs", cwd=tmp_path) as sandboxes:
        api = api_command(api_port)
        apis.start("api", api.args, ready=api.ready, timeout=60)
        sandboxes.start("sandbox", args, ready=serving(f"http://127.0.0.1:{sandbox_port}/sandbox/requests"),
                        timeout=60)
        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        httpx.post(f"{sandbox_url}/sandbox/orders", json=order_json("CC-1001"), timeout=10).raise_for_status()
        failed = httpx.post(f"{sandbox_url}/sandbox/orders/CC-1001/installments/3/fail", timeout=30)
        failed.raise_for_status()

    assert failed.json()["delivery"]["status"] == answer
    assert stored(database_url) == (1 if answer == 200 else 0)
