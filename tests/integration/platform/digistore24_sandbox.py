"""The sandbox app served in a thread with Digistore24 keys and passphrases, and the purchase the samples describe.

The ``dunlink sandbox`` command reads its vendors from the vendors file, which has no Digistore24 keys yet; these
tests give them to ``create_app`` directly and serve it with uvicorn on a free port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.types import ASGIApp

from dunlink.sandbox.server import create_app

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "digistore24"
KEY = "1234567-acme-Zq8rT4wXy2LmN6pB9vC3dF7h"
OTHER_KEY = "7654321-globex-Hj5kP2sQ8wE4rT6yU1iO3aS9"
PASSPHRASE = "acme-ipn-passphrase-4f7c1e9b2a"
OTHER_PASSPHRASE = "globex-ipn-passphrase-8d2e6a0c5f"
TOKEN = "sandbox-token"
CASE_ID = "3f9a1c2b7d4e5f60"
START_TIMEOUT_S = 10.0


@contextlib.contextmanager
def serving_sandbox(webhook_base: str, *, timeout_hold_s: float = 2.0) -> Iterator[str]:
    """The sandbox app on 127.0.0.1 with vendors ``acme`` and ``globex``; yields its base URL."""
    app = create_app(vendors={}, webhook_base=webhook_base, token=TOKEN, timeout_hold_s=timeout_hold_s,
                     digistore24_api_keys={KEY: "acme", OTHER_KEY: "globex"},
                     digistore24_passphrases={"acme": PASSPHRASE, "globex": OTHER_PASSPHRASE})
    with serving(app) as url:
        yield url


@contextlib.contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a free port of 127.0.0.1; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the sandbox did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def seed_body(**changes: Any) -> dict[str, Any]:
    """Purchase ``K7ZQ2M4P`` of the samples: 6 monthly installments of 50.00 EUR, 2 paid, product 512345."""
    body: dict[str, Any] = {
        "id": "K7ZQ2M4P", "vendor": "acme", "product": {"id": "512345", "name": "Coaching Programm"},
        "buyer": {"id": "333222", "email": "anna.meier@example.com", "first_name": "Anna", "last_name": "Meier",
                  "country": "DE"},
        "currency": "EUR", "first_amount": "50.00", "other_amounts": "50.00", "number_of_installments": 6,
        "billing_interval": "1_month", "payments": 2, "created_at": "2026-08-01 10:15:02",
    }
    body.update(changes)
    return body


def sample_fields(name: str) -> dict[str, str]:
    """The fields of one of the IPN samples in tests/fixtures/digistore24/ipn."""
    text = (FIXTURES / "ipn" / f"{name}.form").read_text(encoding="utf-8")
    return dict(parse_qsl(text, keep_blank_values=True, strict_parsing=True))


def keys_of(document: Any) -> Any:
    """The shape of a JSON document: its keys, nested, with lists read by their first element."""
    if isinstance(document, dict):
        return {key: keys_of(value) for key, value in document.items()}
    if isinstance(document, list):
        return [keys_of(document[0])] if document else []
    return None
