"""HttpPlatform against the sandbox with faults on: retries may repeat a call, never its effect."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import httpx
import pytest

from adapters.platform.http import HttpPlatform
from adapters.platform.port import Order, RateLimited, TransientPlatformError
from tests.integration.platform.conftest import TOKEN
from tests.support.sandbox import replacement_for, sample_order

T = TypeVar("T")


def until_done(call: Callable[[], T], *, tries: int = 25) -> T:
    """What the pipeline's own retry does, compressed: call again with the same key until it answers."""
    for _ in range(tries - 1):
        try:
            return call()
        except TransientPlatformError:
            continue
    return call()


def test_503s_and_timeouts_end_with_one_order_per_key_and_one_cancel(sandbox: str,
                                                                      sandbox_client: httpx.Client) -> None:
    originals = [sample_order(f"CC-{1001 + i}") for i in range(8)]
    for original in originals:
        sandbox_client.post("/sandbox/orders", json=original.to_json()).raise_for_status()
    sandbox_client.put("/sandbox/faults", json={"error_rate": 0.5, "error_status": 503, "timeout_rate": 0.1,
                                                "seed": 7}).raise_for_status()
    created: dict[str, Order] = {}

    with HttpPlatform(sandbox, TOKEN, read_timeout=0.3, connect_timeout=1.0, attempts=3) as client:
        for original in originals:
            created[original.id] = until_done(lambda o=original: client.create_order(  # type: ignore[misc]
                replacement_for(o), idempotency_key=f"case-{o.id}:replace"))
        for original in originals:
            until_done(lambda o=original: client.cancel_order(  # type: ignore[misc]
                o.id, reason="replaced", idempotency_key=f"case-{o.id}:cancel"))

    sandbox_client.delete("/sandbox/faults").raise_for_status()
    for original in originals:
        replacements = sandbox_client.get("/sandbox/orders", params={"replaces": original.id}).json()
        assert [r["id"] for r in replacements] == [created[original.id].id]
        assert sandbox_client.get(f"/v1/orders/{original.id}").json()["status"] == "cancelled"
    log = sandbox_client.get("/sandbox/requests").json()
    effects = Counter((r["idempotency_key"], r.get("effect")) for r in log if r.get("effect"))
    for original in originals:
        assert effects[(f"case-{original.id}:replace", "created")] == 1
        assert effects[(f"case-{original.id}:cancel", "cancelled")] == 1
    attempts = Counter(r["idempotency_key"] for r in log if r["idempotency_key"])
    assert max(attempts.values()) > 1, "the client's retries show in the request log"
    faults = Counter(r.get("fault") for r in log)
    assert faults["error"] > 0
    assert faults["timeout"] > 0
    assert all(r["status"] is None for r in log if r.get("fault") == "timeout")


def test_retry_after_within_the_cap_is_honoured(sandbox: str, sandbox_client: httpx.Client) -> None:
    sandbox_client.post("/sandbox/orders", json=sample_order("CC-1001").to_json()).raise_for_status()
    # Seed 1 draws 0.13 then 0.85: the first call is rate limited, the second goes through.
    sandbox_client.put("/sandbox/faults", json={"rate_limit_rate": 0.5, "retry_after_s": 1, "seed": 1}
                       ).raise_for_status()

    with HttpPlatform(sandbox, TOKEN, max_retry_after=5.0) as client:
        started = time.monotonic()
        order = client.get_order("CC-1001")
        elapsed = time.monotonic() - started

    assert order.id == "CC-1001"
    assert elapsed >= 1.0
    assert [r["status"] for r in sandbox_client.get("/sandbox/requests").json()] == [429, 200]


def test_retry_after_beyond_the_cap_is_left_to_the_pipeline(sandbox: str, sandbox_client: httpx.Client) -> None:
    sandbox_client.put("/sandbox/faults", json={"rate_limit_rate": 1.0, "retry_after_s": 600}).raise_for_status()

    with HttpPlatform(sandbox, TOKEN, max_retry_after=5.0) as client, pytest.raises(RateLimited) as caught:
        client.get_order("CC-1001")

    assert caught.value.retry_after == 600
    assert len(sandbox_client.get("/sandbox/requests").json()) == 1


def test_a_held_request_never_takes_effect_later(sandbox: str, sandbox_client: httpx.Client) -> None:
    sandbox_client.post("/sandbox/orders", json=sample_order("CC-1001").to_json()).raise_for_status()
    sandbox_client.put("/sandbox/faults", json={"timeout_rate": 1.0}).raise_for_status()

    with HttpPlatform(sandbox, TOKEN, read_timeout=0.2, attempts=2) as client, pytest.raises(TransientPlatformError):
        client.cancel_order("CC-1001", reason="replaced", idempotency_key="c")

    sandbox_client.delete("/sandbox/faults").raise_for_status()
    time.sleep(0.3)  # give a (wrongly) released request the chance to act before we look
    assert sandbox_client.get("/v1/orders/CC-1001").json()["status"] == "active"
    log = sandbox_client.get("/sandbox/requests").json()
    assert [(r["path"], r["status"], r.get("fault")) for r in log[:2]] == [
        ("/v1/orders/CC-1001/cancel", None, "timeout")] * 2
