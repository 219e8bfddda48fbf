"""deploy/caddy/Caddyfile in front of a real ``dunlink api``: HTTPS, what reaches the api, what a client may hold.

Caddy is Debian's package (``.ci/run`` installs it; compose runs the pinned image of the same Caddyfile). The
Caddyfile is adapted to Caddy's JSON as the container would load it, for the host 127.0.0.1 (which Caddy serves
with a certificate of its own local authority, so no certificate authority on the internet is asked), and run
on free ports with the api at its real address instead of ``api:8000``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from adapters.db.engine import make_engine
from adapters.db.tables import InboxEvent
from dunlink.devtools.processes import ProcessGroup, api_command, free_port, stop_process
from dunlink.sandbox.ipn import sign
from tests.conftest import FIXTURES
from tests.support.compose import ROOT, SERVICES, health_check, mounts
from tests.support.db import fresh_sqlite
from tests.support.stack import eventually, redis_base
from tests.support.vendors import vendors_toml

CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
SECRET = "a-proxy-test-ipn-secret"
OPS_TOKEN = "an-ops-token-for-the-proxy-test"
LIMIT = 256 * 1024


def caddy() -> str:
    found = shutil.which("caddy")
    assert found, "these tests run Caddy: apt-get install caddy (.ci/run installs it)"
    return found


def adapted(domain: str) -> dict[str, Any]:
    """The Caddyfile as Caddy's JSON, with ``DUNLINK_DOMAIN`` set as compose sets it."""
    done = subprocess.run([caddy(), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                          env={**os.environ, "DUNLINK_DOMAIN": domain}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = json.loads(done.stdout)
    return config


def dials(node: Any) -> list[str]:
    """Every upstream address in an adapted config."""
    if isinstance(node, dict):
        return ([node["dial"]] if isinstance(node.get("dial"), str) else []) + \
            [found for value in node.values() for found in dials(value)]
    if isinstance(node, list):
        return [found for value in node for found in dials(value)]
    return []


def redirect_upstream(node: Any, address: str) -> None:
    if isinstance(node, dict):
        if "dial" in node:
            node["dial"] = address
        for value in node.values():
            redirect_upstream(value, address)
    elif isinstance(node, list):
        for value in node:
            redirect_upstream(value, address)


def test_the_caddyfile_is_valid_and_bounds_every_server() -> None:
    validated = subprocess.run([caddy(), "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                               env={**os.environ, "DUNLINK_DOMAIN": "dunlink.example.com"}, capture_output=True,
                               text=True, timeout=30)
    assert validated.returncode == 0, validated.stderr
    assert ("./deploy/caddy", "/etc/caddy") in mounts(SERVICES["proxy"]), "the folder: an edited file is seen"

    config = adapted("dunlink.example.com")
    servers = config["apps"]["http"]["servers"]
    assert sorted(tuple(server["listen"]) for server in servers.values()) == [(":443",), (":80",)]
    for server in servers.values():  # the HTTP port too: it is declared, so the options reach it
        assert server["read_header_timeout"] == 5 * 10**9
        assert server["read_timeout"] == 15 * 10**9
        assert server["write_timeout"] == 30 * 10**9
        assert server["idle_timeout"] == 30 * 10**9
        assert server["max_header_bytes"] == 16 * 1024
        assert server["protocols"] == ["h1", "h2"]
    assert set(dials(config)) == {"api:8000"}, "the api by its compose name, nothing else"
    assert "admin" not in config, "the admin endpoint keeps its default: the container's localhost:2019"


@dataclass(frozen=True)
class Front:
    https: str
    http: str
    api: str
    database_url: str
    ca: Path
    admin_port: int

    def client(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=str(self.ca)), timeout=10)


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    root = tmp_path_factory.mktemp("proxy")
    vendors = root / "vendors.toml"
    vendors.write_text(vendors_toml({"acme": SECRET}), encoding="utf-8")
    database_url = fresh_sqlite(root)
    api_port, http_port, https_port, admin_port = (free_port() for _ in range(4))
    env = {**os.environ, "DUNLINK_DATABASE_URL": database_url, "DUNLINK_BROKER_URL": f"{redis_base()}/0",
           "DUNLINK_VENDORS_FILE": str(vendors), "DUNLINK_OPS_TOKEN": OPS_TOKEN}

    config = adapted("127.0.0.1")
    config["admin"] = {"listen": f"127.0.0.1:{admin_port}"}
    config["apps"]["http"].update(http_port=http_port, https_port=https_port)
    for server in config["apps"]["http"]["servers"].values():
        server["listen"] = [f"127.0.0.1:{https_port if server['listen'] == [':443'] else http_port}"]
    redirect_upstream(config, f"127.0.0.1:{api_port}")
    (root / "caddy.json").write_text(json.dumps(config), encoding="utf-8")
    data = root / "caddy-data"
    caddy_env = {**os.environ, "XDG_DATA_HOME": str(data), "XDG_CONFIG_HOME": str(root / "caddy-config"),
                 "HOME": str(root)}

    with ProcessGroup(env=env, log_dir=root / "logs", cwd=root) as group:
        api = api_command(api_port)
        group.start("api", api.args, ready=api.ready, timeout=60)
        with (root / "logs" / "caddy.log").open("wb") as log:
            proxy = subprocess.Popen([caddy(), "run", "--config", str(root / "caddy.json")], env=caddy_env,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            ca = data / "caddy" / "pki" / "authorities" / "local" / "root.crt"
            made = Front(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}",
                         f"http://127.0.0.1:{api_port}", database_url, ca, admin_port)
            eventually(lambda: proxy.poll() is not None or _answers(made), timeout=30, what="Caddy to serve HTTPS")
            assert proxy.poll() is None, (root / "logs" / "caddy.log").read_text(errors="replace")
            yield made
        finally:
            stop_process(proxy, grace=10)


def _answers(front: Front) -> bool:
    if not front.ca.exists():
        return False
    try:
        with front.client() as client:
            return client.get(f"{front.https}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def ipn(transaction_id: str, *, size: int | None = None) -> bytes:
    """A signed-to-be CopeCart IPN (a one-time payment: stored and answered, nothing to dun), padded to ``size``."""
    fields = json.loads((FIXTURES / "copecart" / "payment_failed_one_time.json").read_text(encoding="utf-8"))
    fields["transaction_id"] = transaction_id
    body = json.dumps(fields).encode()
    if size is not None:
        fields["note"] = ""
        fields["note"] = "x" * (size - len(json.dumps(fields).encode()))
        body = json.dumps(fields).encode()
        assert len(body) == size
    return body


def stored(front: Front) -> int:
    engine = make_engine(front.database_url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(InboxEvent)) or 0)
    finally:
        engine.dispose()


def deliver(client: httpx.Client, url: str, body: bytes | Iterator[bytes], signature: str) -> httpx.Response:
    return client.post(f"{url}/webhooks/copecart/acme", content=body,
                       headers={"X-Copecart-Signature": signature, "Content-Type": "application/json"})


@pytest.mark.redis
def test_https_carries_signed_webhooks_and_health_to_the_api(front: Front) -> None:
    with front.client() as client:
        health = client.get(f"{front.https}/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert "server" not in health.headers, "no proxy or server name"

        before = stored(front)
        body = ipn("T-PROXY-1")
        answered = deliver(client, front.https, body, sign(SECRET, body))
        assert (answered.status_code, answered.text) == (200, "OK")
        assert "server" not in answered.headers
        assert deliver(client, front.https, body, "wrong").status_code == 401, "the api checks every signature"
        # A body of exactly the api's limit passes the proxy whole.
        largest = ipn("T-PROXY-2", size=LIMIT)
        answered = deliver(client, front.https, largest, sign(SECRET, largest))
        assert (answered.status_code, answered.text) == (200, "OK")
        assert stored(front) == before + 2

    # Plain HTTP only redirects to HTTPS (and answers the ACME challenge).
    redirected = httpx.post(f"{front.http}/webhooks/copecart/acme", content=body, timeout=10)
    assert redirected.status_code == 308
    assert redirected.headers["location"] == "https://127.0.0.1/webhooks/copecart/acme"


@pytest.mark.redis
def test_bodies_over_256_kib_are_refused_at_the_proxy(front: Front) -> None:
    """413 from the proxy itself (an empty body; the api's own 413 says why): the api never reads them."""
    before = stored(front)
    too_large = ipn("T-PROXY-3", size=LIMIT + 1)
    with front.client() as client:
        declared = deliver(client, front.https, too_large, sign(SECRET, too_large))
        assert (declared.status_code, declared.text) == (413, "")
        chunked = deliver(client, front.https, iter([too_large[:LIMIT], too_large[LIMIT:]]),
                          sign(SECRET, too_large))
        assert chunked.status_code == 413
        assert "256 KiB" not in chunked.text
    assert stored(front) == before


@pytest.mark.redis
def test_ops_endpoints_and_everything_else_stay_inside(front: Front) -> None:
    bearer = {"Authorization": f"Bearer {OPS_TOKEN}"}
    assert httpx.get(f"{front.api}/metrics", headers=bearer, timeout=10).status_code == 200, \
        "the api serves /metrics on its own port"
    with front.client() as client:
        for method, path in [("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/"),
                             ("GET", "/webhooks/copecart/acme"), ("POST", "/healthz"), ("POST", "/metrics")]:
            answered = client.request(method, f"{front.https}{path}", headers=bearer)
            assert answered.status_code == 404, f"{method} {path}: {answered.status_code}"
    # Paths that climb out of /webhooks/ end at the proxy (its 404 is empty; the api's would say why).
    for path in ("/webhooks/../metrics", "/webhooks/%2e%2e/metrics", "/webhooks/..%2fmetrics",
                 "/webhooks/copecart/%2e%2e/%2e%2e/metrics"):
        answer = raw_request(front, f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    f"Authorization: Bearer {OPS_TOKEN}\r\nContent-Length: 0\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 404 "), (path, answer)
        assert b"\r\nContent-Length: 0\r\n" in answer, (path, answer)


@pytest.mark.redis
def test_clients_cannot_hold_the_proxy(front: Front) -> None:
    with front.client() as client:
        huge = client.get(f"{front.https}/healthz", headers={"X-Filler": "x" * 32 * 1024})
        assert huge.status_code == 431
        assert client.get(f"{front.https}/healthz", headers={"X-Filler": "x" * 8 * 1024}).status_code == 200

    # Headers begun and never finished: the proxy closes the connection after its 5 s header timeout.
    with tls_socket(front) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        sock.settimeout(20)
        answer = sock.recv(1024)
        waited = time.monotonic() - started
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:40]
    assert waited < 15, f"held {waited:.0f} s"


@pytest.mark.redis
def test_the_proxys_health_check_reads_caddys_admin_endpoint(front: Front) -> None:
    args = [arg.replace("127.0.0.1:2019", f"127.0.0.1:{front.admin_port}") for arg in health_check(SERVICES["proxy"])]
    assert args[0] == "wget" and any(str(front.admin_port) in arg for arg in args)
    assert subprocess.run(args, capture_output=True, timeout=30).returncode == 0


def tls_socket(front: Front) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(front.ca))
    port = int(front.https.rsplit(":", 1)[1])
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                               server_hostname="127.0.0.1")


def raw_request(front: Front, request: bytes) -> bytes:
    """The answer to exactly these bytes (no client normalises the path)."""
    with tls_socket(front) as sock:
        sock.sendall(request)
        return sock.recv(4096)

