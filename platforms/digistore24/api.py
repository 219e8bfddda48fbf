"""One call to Digistore24's API, its answer unwrapped and its failures classified into the platform error tree.

Digistore24 takes ``POST {base}/api/call/{function}`` with the parameters form-encoded and the vendor's key in
the ``X-DS-API-KEY`` header, and answers an envelope::

    {"api_version": ..., "current_time": ..., "runtime_seconds": ..., "result": "success", "data": {...}}
    {"api_version": ..., "current_time": ..., "runtime_seconds": ..., "result": "error", "code": 4, "message": ...}

Its own connector expects HTTP 200 for both; its OpenAPI description also names 401, 403 and 404. Both are
handled. The error codes are those of Digistore24's PHP connector (``DS_ERR_*``):

    HTTP timeout, 408                  PlatformTimeout      (transient)
    connection refused/reset, 5xx      PlatformUnavailable  (transient)
    429                                RateLimited          (transient)
    401, 403, DS_ERR_BAD_API_KEY (2),
      DS_ERR_PERMISSION_DENIED (8)     Unauthorized         (permanent: wrong, revoked or read-only key)
    404, DS_ERR_NOT_FOUND (4) on a
      purchase                         OrderNotFound        (permanent)
    any other error code or 4xx        Rejected             (permanent; ``code`` is the DS_ERR_ name)
    not JSON, no envelope              MalformedResponse    (permanent)

Short blips are retried here as the order API client does (tenacity, a few attempts, jittered backoff); longer
trouble is raised for the pipeline's own retry.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from adapters.platform.errors import (
    MalformedResponse,
    OrderNotFound,
    PlatformError,
    PlatformTimeout,
    PlatformUnavailable,
    RateLimited,
    Rejected,
    TransientPlatformError,
    Unauthorized,
)

log = logging.getLogger(__name__)

DEFAULT_URL = "https://www.digistore24.com"
ERROR_CODES = {0: "DS_ERR_UNKNOWN", 1: "DS_ERR_NOT_CONNECTED", 2: "DS_ERR_BAD_API_KEY",
               3: "DS_ERR_BAD_FUNCTION_PARAMS", 4: "DS_ERR_NOT_FOUND", 5: "DS_ERR_BAD_SERVER_RESPONSE",
               6: "DS_ERR_CURL", 7: "DS_ERR_BAD_HTTP_CODE", 8: "DS_ERR_PERMISSION_DENIED", 9: "DS_ERR_BAD_API_CALL"}
UNAUTHORIZED_CODES = frozenset({2, 8})
NOT_FOUND = 4


class DigistoreApi:
    """Calls one vendor's Digistore24 API. One pooled client per instance; build one per vendor at start-up."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_URL,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        attempts: int = 3,
        max_retry_after: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key.strip():
            raise ValueError("the Digistore24 API key is empty")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._attempts = attempts
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"X-DS-API-KEY": api_key, "Accept": "application/json", "User-Agent": "dunlink"},
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def call(self, function: str, params: Mapping[str, str], *, about_purchase: bool = False) -> Any:
        """The ``data`` of a successful call; any failure raises a :class:`PlatformError`.

        With ``about_purchase``, "not found" means the purchase does not exist (:class:`OrderNotFound`);
        otherwise it names something in the request (a product, an affiliate) and is :class:`Rejected`.
        """
        retrying = Retrying(
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            before_sleep=lambda state: log.warning(
                "Digistore24 call %s failed (%s), attempt %d, retrying", function,
                type(state.outcome.exception()).__name__ if state.outcome else "?", state.attempt_number),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._send, function, dict(params), about_purchase)

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

    def _send(self, function: str, params: dict[str, str], about_purchase: bool) -> Any:
        path = f"/api/call/{quote(function, safe='')}"
        try:
            response = self._client.post(path, data=params)
        except httpx.TimeoutException as exc:
            raise PlatformTimeout(f"{function}: no answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise PlatformUnavailable(f"{function}: {type(exc).__name__}: {exc}") from exc
        return _classify(response, function, about_purchase=about_purchase)


def _classify(response: httpx.Response, function: str, *, about_purchase: bool) -> Any:
    status = response.status_code
    envelope = _envelope(response)
    code, name, message = _error_of(envelope)
    where = f"{function}: HTTP {status} {name or ''} {message}".rstrip()
    error: PlatformError | None = None
    if status == 429:
        error = RateLimited(where, retry_after=_retry_after(response.headers.get("Retry-After")))
    elif status >= 500:
        error = PlatformUnavailable(where, status=status)
    elif status == 408:
        error = PlatformTimeout(where)
    elif status in (401, 403) or code in UNAUTHORIZED_CODES:
        error = Unauthorized(where)
    elif (status == 404 or code == NOT_FOUND) and about_purchase:
        error = OrderNotFound(where)
    elif 400 <= status < 500 or name is not None:
        error = Rejected(where, status=status, code=name or f"http_{status}")
    elif status != 200:
        error = MalformedResponse(f"{function}: unexpected HTTP status {status}")
    if error is not None:
        raise error
    if envelope is None:
        raise MalformedResponse(f"{function}: the answer is not Digistore24's JSON envelope")
    if envelope.get("result") != "success" or "data" not in envelope:
        raise MalformedResponse(f"{function}: result {envelope.get('result')!r}, expected 'success' with data")
    return envelope["data"]


def _envelope(response: httpx.Response) -> dict[str, Any] | None:
    """The JSON envelope, numbers read as :class:`Decimal` so no amount ever passes through a float."""
    try:
        document = json.loads(response.content, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict) or "result" not in document:
        return None
    return document


def _error_of(envelope: Mapping[str, Any] | None) -> tuple[int | None, str | None, str]:
    """An error envelope's numeric code (if it has one), the code's DS_ERR name and the message."""
    if envelope is None or envelope.get("result") != "error":
        return None, None, ""
    raw = envelope.get("code")
    message = str(envelope.get("message") or "")[:300]
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        raw = int(raw.strip())
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw, ERROR_CODES.get(raw, f"code_{raw}"), message
    if isinstance(raw, str) and raw.strip():
        return None, raw.strip()[:64], message
    return None, "unknown", message


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
