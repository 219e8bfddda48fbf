"""How HttpPlatform turns HTTP answers into the error tree, and what it sends (httpx's MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from adapters.platform.http import HttpPlatform
from adapters.platform.port import (
    MalformedResponse,
    OrderCompleted,
    OrderNotFound,
    PlatformError,
    PlatformTimeout,
    PlatformUnavailable,
    RateLimited,
    Rejected,
    Unauthorized,
)
from tests.support.sandbox import replacement_for, sample_order

ORDER = {**sample_order("CC-1001").to_json(), "payment_url": "http://platform/pay/CC-1001"}


def platform(answers: list[httpx.Response | Exception], seen: list[httpx.Request],
             waits: list[float] | None = None, **options: Any) -> HttpPlatform:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    recorded: list[float] = [] if waits is None else waits
    return HttpPlatform("http://platform", "s3cret", transport=httpx.MockTransport(handle),
                        sleep=recorded.append, **options)


def error(status: int, code: str = "x", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": code, "message": "m"}, headers=headers)


def test_writes_carry_the_token_and_the_idempotency_key() -> None:
    seen: list[httpx.Request] = []
    client = platform([httpx.Response(201, json=ORDER)], seen)

    client.create_order(replacement_for(sample_order()), idempotency_key="case-1:replace")

    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/v1/orders")
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert request.headers["Idempotency-Key"] == "case-1:replace"
    assert json.loads(request.content) == replacement_for(sample_order()).to_json()


def test_cancel_posts_the_reason_to_the_quoted_order_path() -> None:
    seen: list[httpx.Request] = []
    client = platform([httpx.Response(200, json={**ORDER, "status": "cancelled"})], seen)

    order = client.cancel_order("CC/1001", reason="replaced", idempotency_key="c-1")

    assert order.status == "cancelled"
    assert seen[0].url.raw_path == b"/v1/orders/CC%2F1001/cancel"
    assert json.loads(seen[0].content) == {"reason": "replaced"}
    assert seen[0].headers["Idempotency-Key"] == "c-1"


@pytest.mark.parametrize(("answer", "expected"), [
    (error(401, "unauthorized"), Unauthorized),
    (error(403, "forbidden"), Unauthorized),
    (error(404, "not_found"), OrderNotFound),
    (error(422, "invalid_order"), Rejected),
    (error(400, "missing_idempotency_key"), Rejected),
    (httpx.Response(200, text="<html>"), MalformedResponse),
    (httpx.Response(200, json={"id": "CC-1"}), MalformedResponse),
])
def test_permanent_answers_are_raised_at_once(answer: httpx.Response, expected: type[PlatformError]) -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(expected):
        platform([answer], seen).get_order("CC-1001")
    assert len(seen) == 1


def test_rejected_carries_the_platforms_code() -> None:
    with pytest.raises(Rejected) as caught:
        platform([error(422, "idempotency_key_reused")], []).create_order(
            replacement_for(sample_order()), idempotency_key="k")
    assert (caught.value.status, caught.value.code) == (422, "idempotency_key_reused")


def test_409_on_cancel_means_the_order_is_completed() -> None:
    with pytest.raises(OrderCompleted):
        platform([error(409, "order_completed")], []).cancel_order("CC-1", reason="r", idempotency_key="k")


Blip = Callable[[], httpx.Response | Exception]


@pytest.mark.parametrize(("blip", "expected"), [
    (lambda: error(503), PlatformUnavailable),
    (lambda: error(500), PlatformUnavailable),
    (lambda: httpx.ConnectError("refused"), PlatformUnavailable),
    (lambda: httpx.ReadTimeout("slow"), PlatformTimeout),
    (lambda: httpx.ConnectTimeout("slow"), PlatformTimeout),
])
def test_transient_failures_are_retried_then_raised(blip: Blip, expected: type[PlatformError]) -> None:
    seen: list[httpx.Request] = []
    waits: list[float] = []
    client = platform([blip(), blip(), blip()], seen, waits, attempts=3)

    with pytest.raises(expected):
        client.get_order("CC-1001")

    assert len(seen) == 3
    assert len(waits) == 2
    assert all(0 <= w <= 1.0 for w in waits)


def test_a_blip_followed_by_success_returns_the_order() -> None:
    seen: list[httpx.Request] = []
    client = platform([error(503), httpx.ReadTimeout("slow"), httpx.Response(201, json=ORDER)], seen)

    order = client.create_order(replacement_for(sample_order()), idempotency_key="k-1")

    assert order.id == "CC-1001"
    assert [r.headers["Idempotency-Key"] for r in seen] == ["k-1", "k-1", "k-1"]


def test_unavailable_carries_the_status() -> None:
    with pytest.raises(PlatformUnavailable) as caught:
        platform([error(502)], [], attempts=1).get_order("CC-1")
    assert caught.value.status == 502


def test_retry_after_within_the_cap_is_waited_for() -> None:
    waits: list[float] = []
    client = platform([error(429, headers={"Retry-After": "2"}), httpx.Response(200, json=ORDER)], [], waits,
                      max_retry_after=5.0)

    assert client.get_order("CC-1001").id == "CC-1001"
    assert waits == [2.0]


def test_retry_after_beyond_the_cap_is_raised_at_once() -> None:
    seen: list[httpx.Request] = []
    waits: list[float] = []
    client = platform([error(429, headers={"Retry-After": "120"})], seen, waits, max_retry_after=5.0)

    with pytest.raises(RateLimited) as caught:
        client.get_order("CC-1001")

    assert caught.value.retry_after == 120.0
    assert (len(seen), waits) == (1, [])


def test_the_token_is_not_in_error_messages() -> None:
    with pytest.raises(PlatformError) as caught:
        platform([error(401, "unauthorized")], []).get_order("CC-1")
    assert "s3cret" not in str(caught.value)
