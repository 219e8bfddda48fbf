"""The platform's order API over HTTP (httpx), with errors classified and short blips retried in place.

One pooled client per instance (build one per process at start-up), a timeout on every call, and the
caller's ``Idempotency-Key`` on every write, so a retry after a timeout can never make a second order.
Retries here are few and short: anything longer (an outage, a ``Retry-After`` beyond ``max_retry_after``)
is raised as a :class:`TransientPlatformError` and left to the pipeline's own retry, so no worker sleeps
for minutes holding a task.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from adapters.platform.errors import (
    MalformedResponse,
    OrderCompleted,
    OrderNotFound,
    PlatformError,
    PlatformTimeout,
    PlatformUnavailable,
    RateLimited,
    Rejected,
    TransientPlatformError,
    Unauthorized,
)
from adapters.platform.port import NewOrder, Order

log = logging.getLogger(__name__)


class HttpPlatform:
    """Implements :class:`~adapters.platform.port.PlatformPort` against ``base_url``."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        attempts: int = 3,
        max_retry_after: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._attempts = attempts
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                     "User-Agent": "dunlink"},
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_order(self, order_id: str) -> Order:
        return self._call("GET", f"/v1/orders/{quote(order_id, safe='')}")

    def create_order(self, order: NewOrder, *, idempotency_key: str) -> Order:
        return self._call("POST", "/v1/orders", body=order.to_json(), key=idempotency_key)

    def cancel_order(self, order_id: str, *, reason: str, idempotency_key: str) -> Order:
        return self._call("POST", f"/v1/orders/{quote(order_id, safe='')}/cancel", body={"reason": reason},
                          key=idempotency_key, cancel=True)

    # -- retries ---------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, body: Any = None, key: str | None = None,
              cancel: bool = False) -> Order:
        if key is not None and not key.strip():
            raise ValueError("idempotency_key must not be empty")
        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            before_sleep=lambda state: log.warning(
                "platform call %s %s failed (%s), attempt %d, retrying", method, path,
                type(state.outcome.exception()).__name__ if state.outcome else "?", state.attempt_number),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._send, method, path, body=body, key=key, cancel=cancel)

    def _retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, RateLimited):
            return exc.retry_after <= self._max_retry_after
        return isinstance(exc, TransientPlatformError)

    _backoff = wait_random_exponential(multiplier=0.1, max=1.0)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited):
            return exc.retry_after
        return float(self._backoff(state))

    # -- one attempt -----------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, body: Any, key: str | None, cancel: bool) -> Order:
        headers = {"Idempotency-Key": key} if key is not None else None
        try:
            response = self._client.request(method, path, json=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise PlatformTimeout(f"{method} {path}: no answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise PlatformUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        return _classify(response, method=method, path=path, cancel=cancel)


def _classify(response: httpx.Response, *, method: str, path: str, cancel: bool) -> Order:
    status = response.status_code
    if status in (200, 201):
        try:
            document = response.json()
        except ValueError:
            raise MalformedResponse(f"{method} {path}: {status} answer is not JSON") from None
        return Order.from_json(document)
    code, message = _error_body(response)
    where = f"{method} {path}: {status} {code}: {message}"
    error: PlatformError
    if status == 429:
        error = RateLimited(where, retry_after=_retry_after(response.headers.get("Retry-After")))
    elif status >= 500:
        error = PlatformUnavailable(where, status=status)
    elif status == 408:
        error = PlatformTimeout(where)
    elif status in (401, 403):
        error = Unauthorized(where)
    elif status == 404:
        error = OrderNotFound(where)
    elif status == 409 and cancel:
        error = OrderCompleted(where)
    elif 400 <= status < 500:
        error = Rejected(where, status=status, code=code)
    else:
        error = MalformedResponse(f"{method} {path}: unexpected status {status}")
    raise error


def _error_body(response: httpx.Response) -> tuple[str, str]:
    try:
        document = response.json()
    except ValueError:
        return "unknown", response.text[:200]
    if isinstance(document, dict):
        return str(document.get("error", "unknown")), str(document.get("message", ""))[:500]
    return "unknown", str(document)[:200]


def _retry_after(value: str | None) -> float:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; 1 s if absent."""
    if value is None:
        return 1.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 1.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
