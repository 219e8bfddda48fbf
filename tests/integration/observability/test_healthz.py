"""``GET /healthz`` says whether the database and the broker answer, and answers quickly even when they hang;
which check failed is told only to the ops token, as are the figures of ``GET /metrics``."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from dunlink.config.settings import Settings
from dunlink.devtools.processes import free_port
from dunlink.runtime.bootstrap import build_services
from dunlink.webapp.app import broker_probe, create_app
from tests.support import db
from tests.support.stack import OPS_HEADERS, OPS_TOKEN, REDIS_BASE, SECRET, VENDORS, eventually, redis_base

BROKER_UP = f"{REDIS_BASE}/0"


def _client(tmp_path: Path, database_url: str, broker_url: str, *, ops_token: str | None = OPS_TOKEN,
            headers: dict[str, str] | None = None) -> Iterator[TestClient]:
    """The webhook app with DUNLINK_OPS_TOKEN set to ``ops_token``; the client sends the token unless ``headers``
    says otherwise."""
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(VENDORS.format(secret=SECRET), encoding="utf-8")
    services = build_services(Settings(database_url=database_url, broker_url=broker_url, vendors_file=vendors,
                                       ops_token=ops_token), enqueue=lambda *_: None)
    try:
        with TestClient(create_app(services, check_broker=broker_probe(broker_url)),
                        headers=OPS_HEADERS if headers is None else headers) as client:
            yield client
    finally:
        services.engine.dispose()


@pytest.fixture
def healthy(tmp_path: Path, database_url: str) -> Iterator[TestClient]:
    yield from _client(tmp_path, database_url, BROKER_UP)


def test_everything_up_answers_200_naming_database_and_broker(healthy: TestClient) -> None:
    response = healthy.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_a_database_that_went_away_answers_503(healthy: TestClient, database_url: str) -> None:
    assert healthy.get("/healthz").status_code == 200  # the pool now holds a connection to it
    if database_url.startswith("sqlite"):
        path = Path(make_url(database_url).database or "")
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
        path.write_bytes(b"this is no longer a database" * 100)
    else:
        name = make_url(database_url).database
        with psycopg.connect(db._conninfo(db.ADMIN_URL), autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    # The answer of a second ago may still be given; a fresh one follows.
    response = eventually(lambda: (answer := healthy.get("/healthz")).status_code == 503 and answer, timeout=5,
                          what="/healthz to see the database gone")
    body = response.json()
    assert body["status"] == "down"
    assert body["database"].startswith("down")
    assert body["broker"] == "ok"


def test_a_broker_on_a_closed_port_answers_503(tmp_path: Path, database_url: str) -> None:
    for client in _client(tmp_path, database_url, f"redis://127.0.0.1:{free_port()}/0"):
        response = client.get("/healthz")
        assert response.status_code == 503
        assert response.json()["broker"].startswith("down")
        assert response.json()["database"] == "ok"


def test_a_broker_that_accepts_and_never_answers_cannot_hang_the_probe(tmp_path: Path) -> None:
    with socket.socket() as silent:  # completes TCP handshakes from its backlog, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        for client in _client(tmp_path, db.fresh_sqlite(tmp_path), f"redis://127.0.0.1:{port}/0"):
            started = time.monotonic()
            response = client.get("/healthz")
            elapsed = time.monotonic() - started
            assert response.status_code == 503
            assert response.json()["broker"].startswith("down")
            assert elapsed < 3.5


def test_metrics_still_answer_while_the_database_is_down(tmp_path: Path, postgres_url: str) -> None:
    for client in _client(tmp_path, postgres_url, BROKER_UP):
        assert "dunlink_database_up 1.0" in client.get("/metrics").text
        with psycopg.connect(db._conninfo(db.ADMIN_URL), autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE "{make_url(postgres_url).database}" WITH (FORCE)')
        response = client.get("/metrics")
        assert response.status_code == 200
        assert "dunlink_database_up 0.0" in response.text
        assert "# TYPE dunlink_webhooks_total counter" in response.text or "dunlink_webhooks" in response.text


def _keepalive(local_port: int) -> dict[str, int]:
    """The TCP keepalive settings of this process's socket on ``local_port``, as the kernel applies them."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            connection = socket.socket(fileno=os.dup(int(fd)))
        except OSError:  # not a socket, or closed meanwhile
            continue
        with connection:
            if connection.family in (socket.AF_INET, socket.AF_INET6) and connection.getsockname()[1] == local_port:
                return {"on": connection.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                        **{name: connection.getsockopt(socket.IPPROTO_TCP, option) for name, option in (
                            ("idle", socket.TCP_KEEPIDLE), ("interval", socket.TCP_KEEPINTVL),
                            ("count", socket.TCP_KEEPCNT))}}
    raise AssertionError(f"no socket on local port {local_port}")


def _families(text: str) -> dict[str, list[float]]:
    return {family.name: [sample.value for sample in family.samples]
            for family in text_string_to_metric_families(text)}


def test_a_scrape_stuck_on_the_database_leaves_the_next_ones_answering(
        tmp_path: Path, postgres_url: str, logged: Callable[[], list[dict[str, object]]]) -> None:
    """A scrape waiting on the database (here on a table a person locked; a dead connection waits the same)
    holds the api's running totals. The scrapes after it answer within seconds all the same: the api's own
    counters and ``dunlink_database_up 0``, with a warning saying why. The stuck one's connection probes the
    database host, so a host gone without a word fails it within a minute."""
    name = make_url(postgres_url).database
    for client in _client(tmp_path, postgres_url, BROKER_UP):
        with psycopg.connect(db._conninfo(postgres_url), connect_timeout=5) as person, \
                psycopg.connect(db._conninfo(db.ADMIN_URL), autocommit=True, connect_timeout=5) as watch, \
                ThreadPoolExecutor(2) as scrapes:
            person.execute("LOCK TABLE cases IN ACCESS EXCLUSIVE MODE")
            try:
                stuck = scrapes.submit(client.get, "/metrics")
                waiting = eventually(lambda: watch.execute(
                    "SELECT client_port FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                    (name,)).fetchone(), timeout=10, what="the scrape to wait on the lock")
                probing = _keepalive(int(str(waiting[0])))
                started = time.monotonic()
                answer = scrapes.submit(client.get, "/metrics").result(timeout=15)
                elapsed = time.monotonic() - started
            finally:
                person.rollback()
            assert answer.status_code == 200
            shown = _families(answer.text)
            assert shown["dunlink_database_up"] == [0]
            assert {"dunlink_webhooks", "dunlink_webhook_batch_size"} <= shown.keys()
            assert "dunlink_cases" not in shown
            assert elapsed < 10
            assert [line["level"] for line in logged() if line["event"] == "metrics_scrape_still_reading"] == \
                ["warning"]
            assert probing["on"] and probing["idle"] + probing["interval"] * probing["count"] <= 60, probing

            assert _families(stuck.result(timeout=30).text)["dunlink_database_up"] == [1]
        assert _families(client.get("/metrics").text)["dunlink_database_up"] == [1]


# -- who sees what -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("authorization", [None, "Bearer not-the-ops-token-at-all", f"Basic {OPS_TOKEN}",
                                           OPS_TOKEN, f"Bearer {OPS_TOKEN}x"])
def test_without_the_ops_token_healthz_says_only_ok_or_down(tmp_path: Path, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for client in _client(tmp_path, db.fresh_sqlite(tmp_path), f"redis://127.0.0.1:{free_port()}/0",
                          headers=headers):
        response = client.get("/healthz")
        assert (response.status_code, response.json()) == (503, {"status": "down"})

        named = client.get("/healthz", headers=OPS_HEADERS)
        assert named.status_code == 503
        assert named.json()["database"] == "ok"
        assert named.json()["broker"].startswith("down")


@pytest.mark.parametrize("authorization", [None, "Bearer not-the-ops-token-at-all", OPS_TOKEN, f"Basic {OPS_TOKEN}"])
def test_metrics_answer_401_without_the_ops_token(tmp_path: Path, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for client in _client(tmp_path, db.fresh_sqlite(tmp_path), BROKER_UP, headers=headers):
        response = client.get("/metrics")
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "dunlink_" not in response.text

        assert "dunlink_database_up 1.0" in client.get("/metrics", headers=OPS_HEADERS).text


def test_without_an_ops_token_set_there_are_no_metrics_and_healthz_names_nothing(tmp_path: Path) -> None:
    for client in _client(tmp_path, db.fresh_sqlite(tmp_path), BROKER_UP, ops_token=None):
        assert client.get("/metrics").status_code == 404
        assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"])
def test_no_schema_or_docs_are_served(tmp_path: Path, path: str) -> None:
    for client in _client(tmp_path, db.fresh_sqlite(tmp_path), BROKER_UP):
        assert client.get(path).status_code == 404


def test_a_flood_of_health_checks_opens_no_connection_per_call(tmp_path: Path) -> None:
    """One round of probes serves every call within a second of it: a flood of ``/healthz`` cannot open a
    database and a broker connection per call."""
    broker = f"{redis_base()}/0"
    with redis.Redis.from_url(broker) as watch:
        for client in _client(tmp_path, db.fresh_sqlite(tmp_path), broker):
            before = int(watch.info("stats")["total_connections_received"])
            started = time.monotonic()
            answers = [client.get("/healthz").status_code for _ in range(50)]
            seconds = time.monotonic() - started
            opened = int(watch.info("stats")["total_connections_received"]) - before

    assert answers == [200] * 50
    assert opened <= seconds / 1.0 + 1, f"{opened} broker connections for 50 checks in {seconds:.1f}s"
