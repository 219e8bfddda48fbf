"""Every bad delivery the contract names, against the running webhook server: the answer it names, and
nothing stored or enqueued. No worker runs, so whatever the server publishes stays countable in Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from platforms.copecart.webhook import signature
from tests.support.stack import SECRET, Stack, eventually, running_stack

FIXTURE = Path(__file__).parents[1] / "fixtures" / "copecart" / "payment_failed_breakdown.json"


@pytest.fixture
def idle_stack(database_url: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, database_url, workers=0, beat=False) as running:
        yield running


def _ipn(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    for name, value in changes.items():
        if value is _MISSING:
            del fields[name]
        else:
            fields[name] = value
    return fields


_MISSING = object()


def _signed(fields: dict[str, Any] | bytes) -> tuple[bytes, str]:
    body = fields if isinstance(fields, bytes) else json.dumps(fields).encode("utf-8")
    return body, signature(SECRET, body)


def _post(url: str, body: bytes | Iterator[bytes], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, headers={"Content-Type": "application/json", **headers}, timeout=30)


def test_every_bad_delivery_is_refused_with_nothing_stored_or_enqueued(idle_stack: Stack) -> None:
    stack = idle_stack
    url = f"{stack.api_url}/webhooks/copecart/acme"
    good, good_signature = _signed(_ipn())
    big = json.dumps({**_ipn(), "metadata": "x" * (256 * 1024)}).encode("utf-8")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count what it reads
        for start in range(0, len(big), 16 * 1024):
            yield big[start:start + 16 * 1024]

    cases: list[tuple[str, httpx.Response, int, str]] = [
        ("no signature", _post(url, good, {}), 401, ""),
        ("wrong signature", _post(url, good, {"X-Copecart-Signature": signature("not-the-secret", good)}), 401, ""),
        ("signature of other bytes", _post(url, good + b" ", {"X-Copecart-Signature": good_signature}), 401, ""),
        ("unknown vendor", _post(f"{stack.api_url}/webhooks/copecart/nobody", good,
                                 {"X-Copecart-Signature": good_signature}), 404, ""),
    ]
    malformed: list[tuple[str, dict[str, Any] | bytes, str]] = [
        ("not JSON", b"{not json", "body"),
        ("a JSON array", b"[1, 2]", "body"),
        ("event_type missing", _ipn(event_type=_MISSING), "event_type"),
        ("order_id missing", _ipn(order_id=_MISSING), "order_id"),
        ("order_id a number", _ipn(order_id=1001), "order_id"),
        ("payment_plan missing", _ipn(payment_plan=_MISSING), "payment_plan"),
        ("rate_number missing on a breakdown", _ipn(rate_number=_MISSING), "rate_number"),
        ("rate_number a list", _ipn(rate_number=[3]), "rate_number"),
        ("transaction_amount not decimal", _ipn(transaction_amount="fifty"), "transaction_amount"),
        # One minor unit more than a 64-bit integer holds: too large for the database, so never stored.
        ("transaction_amount beyond 64 bits", _ipn(transaction_amount="92233720368547758.08"), "transaction_amount"),
        ("transaction_currency missing", _ipn(transaction_currency=_MISSING), "transaction_currency"),
        ("transaction_id a number", _ipn(transaction_id=90003), "transaction_id"),
    ]
    for what, fields, field in malformed:
        body, signed = _signed(fields)
        cases.append((what, _post(url, body, {"X-Copecart-Signature": signed}), 400, field))
    big_signature = signature(SECRET, big)
    cases.append(("over 256 KiB", _post(url, big, {"X-Copecart-Signature": big_signature}), 413, ""))
    cases.append(("over 256 KiB, chunked", _post(url, chunks(), {"X-Copecart-Signature": big_signature}), 413, ""))

    for what, response, status, field in cases:
        assert response.status_code == status, (what, response.status_code, response.text)
        assert response.text != "OK", what
        if field:
            assert field in response.text, (what, response.text)
    assert stack.inbox() == []
    assert stack.queue_lengths() == {"dunlink.platform": 0, "dunlink.email": 0}

    # The database down: 503, never OK; back up, the same delivery is stored and enqueued once.
    with stack.database_down() as api_url:
        down = _post(f"{api_url}/webhooks/copecart/acme", good, {"X-Copecart-Signature": good_signature})
        assert (down.status_code, down.text != "OK") == (503, True)
        # /healthz may still give its answer of a second ago; a fresh one follows.
        eventually(lambda: httpx.get(f"{api_url}/healthz", timeout=10).status_code == 503, timeout=5,
                   what="/healthz to see the database down")
    assert stack.inbox() == []
    assert stack.queue_lengths() == {"dunlink.platform": 0, "dunlink.email": 0}

    stored = _post(url, good, {"X-Copecart-Signature": good_signature})
    assert (stored.status_code, stored.text) == (200, "OK")
    assert [(row.event_type, row.order_id, row.dedup_key) for row in stack.inbox()] == [
        ("payment.failed", "CC-1001", "T-90003")]
    assert stack.queue_lengths() == {"dunlink.platform": 1, "dunlink.email": 0}
