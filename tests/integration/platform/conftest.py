"""One sandbox subprocess per session (reset before each test) and a tiny server receiving its IPNs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tests.support.sandbox import running_sandbox, write_vendors_file

IPN_SECRET = "test-ipn-secret-0a5e7c"
TOKEN = "sandbox-token"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class WebhookReceiver:
    """Stands in for the webhook app: records each delivery and answers ``status`` with ``OK``."""

    url: str
    received: list[Received] = field(default_factory=list)
    status: int = 200


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(receiver.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def sandbox_process(tmp_path_factory: pytest.TempPathFactory, webhook_receiver: WebhookReceiver) -> Iterator[str]:
    vendors = write_vendors_file(tmp_path_factory.mktemp("sandbox"), secret=IPN_SECRET)
    with running_sandbox(vendors_file=vendors, webhook_base=webhook_receiver.url, token=TOKEN) as url:
        yield url


@pytest.fixture
def sandbox(sandbox_process: str, webhook_receiver: WebhookReceiver) -> str:
    """The sandbox's base URL, with no orders, requests, IPNs or faults left by earlier tests."""
    httpx.post(f"{sandbox_process}/sandbox/reset", timeout=5).raise_for_status()
    webhook_receiver.received.clear()
    webhook_receiver.status = 200
    return sandbox_process


@pytest.fixture
def sandbox_client(sandbox: str) -> Iterator[httpx.Client]:
    """Plain HTTP to the sandbox with the right token, for the /sandbox controls and raw /v1 calls."""
    with httpx.Client(base_url=sandbox, timeout=10, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client
