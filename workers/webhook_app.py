"""The webhook app: verify, parse, store durably, answer at once, then wake the workers.

``OK`` is said only after the event is committed. The wake-up is published after that commit; if the broker
is down the event is still safe in the database and the relay publishes it later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.concurrency import run_in_threadpool

from domain import ipn
from workers.bootstrap import Services
from workers.celery_app import PLATFORM_QUEUE
from workers.metrics import WEBHOOKS, render_metrics

MAX_BODY = 256 * 1024
SIGNATURE_HEADER = "x-copecart-signature"
log = structlog.get_logger("dunlink.webhook")


class _TooLarge(Exception):
    pass


def signature(secret: str, body: bytes) -> str:
    """base64(HMAC-SHA256(secret, body)), as CopeCart signs its IPNs."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def signature_matches(secret: str, body: bytes, given: str | None) -> bool:
    if not given:
        return False
    try:
        given_bytes = given.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(signature(secret, body).encode("ascii"), given_bytes)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(services: Services, *, check_broker: Callable[[], None] | None = None) -> FastAPI:
    app = FastAPI(title="dunlink", version="0.1.0", docs_url=None, redoc_url=None)

    def answer(vendor: str, event: str, status: int, body: str) -> Response:
        WEBHOOKS.labels(vendor=vendor, event=event, answer=str(status)).inc()
        return PlainTextResponse(body, status_code=status)

    def store(vendor: str, event_type: str, key: str, order_id: str, body: str) -> tuple[int, bool]:
        with services.uow() as uow:
            stored = uow.inbox.add(vendor=vendor, event_type=event_type, dedup_key=key, order_id=order_id,
                                   body=body, now=services.clock())
            uow.commit()
        return stored.id, stored.created

    def publish(event_id: int) -> None:
        try:
            services.enqueue("dunlink.process_event", [event_id], PLATFORM_QUEUE)
        except Exception as exc:  # stored and answered; the relay publishes it later
            log.warning("enqueue_failed", event_id=event_id, error=type(exc).__name__)

    @app.post("/webhooks/copecart/{vendor}", response_class=PlainTextResponse,
              responses={400: {}, 401: {}, 404: {}, 413: {}, 503: {}})
    async def copecart(vendor: str, request: Request) -> Response:
        try:
            body = await _read_body(request)
        except _TooLarge:
            return answer("-", "-", 413, "body larger than 256 KiB")
        config = services.vendors.get(vendor)
        if config is None:
            return answer("-", "-", 404, "unknown vendor")
        if not signature_matches(config.copecart_ipn_secret, body, request.headers.get(SIGNATURE_HEADER)):
            return answer(vendor, "-", 401, "signature missing or wrong")
        try:
            fields = json.loads(body)
        except (ValueError, RecursionError):
            return answer(vendor, "-", 400, "body: not JSON")
        if not isinstance(fields, dict):
            return answer(vendor, "-", 400, "body: must be a JSON object")
        try:
            event = ipn.parse_event(fields)
        except ipn.IpnFieldError as exc:
            return answer(vendor, "-", 400, str(exc))
        event_label = event.event_type if event.acted_on else "other"
        try:
            text_body = body.decode("utf-8")
        except UnicodeDecodeError:
            return answer(vendor, event_label, 400, "body: not UTF-8")
        try:
            event_id, created = await run_in_threadpool(store, vendor, event.event_type,
                                                         ipn.dedup_key(fields, body), event.order_id, text_body)
        except (OperationalError, DBAPIError) as exc:
            log.error("inbox_unavailable", vendor=vendor, error=type(exc).__name__)
            return answer(vendor, event_label, 503, "storage unavailable, try again")
        log.info("webhook_stored", vendor=vendor, event_type=event.event_type, order=event.order_id,
                 event_id=event_id, duplicate=not created)
        if created and event.acted_on:
            await run_in_threadpool(publish, event_id)
        return answer(vendor, event_label, 200, "OK")

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        checks: dict[str, str] = {}

        def database() -> None:
            with services.engine.connect() as connection:
                connection.execute(text("SELECT 1"))

        for name, probe in (("database", database), ("broker", check_broker)):
            if probe is None:
                continue
            try:
                await run_in_threadpool(probe)
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = f"down: {type(exc).__name__}"
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse({"status": "ok" if healthy else "down", **checks}, status_code=200 if healthy else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        payload, content_type = await run_in_threadpool(render_metrics, services)
        return Response(payload, media_type=content_type)

    return app


def broker_probe(url: str) -> Callable[[], None]:
    def probe() -> None:
        from kombu.connection import Connection

        with Connection(url, connect_timeout=2) as connection:  # type: ignore[no-untyped-call]
            connection.ensure_connection(max_retries=1, timeout=2)

    return probe


