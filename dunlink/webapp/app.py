"""The webhook app: verify, parse, store durably, wake the workers, answer.

``OK`` is said only after the event is committed. Events of concurrent requests are committed together by
one writer (:mod:`dunlink.webapp.intake`), which publishes their wake-ups after the commit and before the answers;
if the broker is down the events are still safe in the database and the relay publishes them later.

The same port faces the internet, so it serves nothing else an outsider could use: ``/metrics`` answers only
with ``Authorization: Bearer <DUNLINK_OPS_TOKEN>`` (and does not exist without that setting), ``/healthz``
tells anyone only ``ok`` or ``down`` and names each check only to the token, no OpenAPI schema or docs are
served, and no redirect is ever built from the request's ``Host`` header.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from kombu.connection import Connection
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from adapters.db.inbox_batch import NewEvent
from dunlink.runtime.bootstrap import Services
from dunlink.runtime.metrics import WEBHOOKS, database_registry, render_metrics
from dunlink.usecases.ports import Work
from dunlink.webapp.intake import InboxWriter, LoopInboxWriter, StorageUnavailable
from dunlink.webapp.serving import BODY_TIMED_OUT
from dunlink.webapp.vendor_page import add_vendor_routes
from platforms.port import ConnectionCheck, Received, Unreadable, WebhookPlatform
from platforms.registry import PLATFORMS
from workers.celery_app import transport_options
from workers.wakeups import RedisWakeUps, one_by_one

MAX_BODY = 256 * 1024
log = structlog.get_logger("dunlink.webhook")


class _TooLarge(Exception):
    pass


class _BodyIncomplete(Exception):
    """The client went away (or was cut off by the server's body time limit) before its body was complete."""

    def __init__(self, received: int) -> None:
        super().__init__(received)
        self.received = received


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise _TooLarge
            chunks.append(chunk)
    except ClientDisconnect:
        raise _BodyIncomplete(size) from None
    return b"".join(chunks)


# How long one health answer is reused: a flood of /healthz costs one round of probes a second, not a fresh
# database and broker connection per request.
HEALTH_CACHE_SECONDS = 1.0


def ops_token_matches(token: str | None, authorization: str | None) -> bool:
    """Whether ``Authorization: Bearer <token>`` carries the ops token; compared in constant time."""
    if token is None or not authorization:
        return False
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    try:
        given_bytes = given.strip().encode("ascii")
    except UnicodeEncodeError:
        return False
    return hmac.compare_digest(token.encode("ascii"), given_bytes)


class HealthChecks:
    """The probes' answers, shared by every request within :data:`HEALTH_CACHE_SECONDS` of them.

    Requests that come while the probes run wait for that same round instead of starting another.
    """

    def __init__(self, probes: Sequence[tuple[str, Callable[[], None]]], *,
                 max_age: float = HEALTH_CACHE_SECONDS) -> None:
        self.probes, self.max_age = list(probes), max_age
        self._answer: tuple[float, dict[str, str]] | None = None
        self._round: asyncio.Future[dict[str, str]] | None = None

    async def checks(self) -> dict[str, str]:
        answer = self._answer
        if answer is not None and time.monotonic() - answer[0] < self.max_age:
            return answer[1]
        loop = asyncio.get_running_loop()
        running = self._round
        if running is None or running.done() or running.get_loop() is not loop:
            running = self._round = loop.create_task(self._probe())
        return await asyncio.shield(running)

    async def _probe(self) -> dict[str, str]:
        results = await asyncio.gather(*(_bounded(probe) for _, probe in self.probes))
        checks = {name: result for (name, _), result in zip(self.probes, results, strict=True)}
        self._answer = (time.monotonic(), checks)
        return checks


def create_app(services: Services, *, check_broker: Callable[[], None] | None = None) -> FastAPI:
    enqueue_many = services.enqueue_many or one_by_one(services.enqueue)

    def publish(event_ids: Sequence[int]) -> None:
        enqueue_many(Work.PROCESS_EVENT.value, [[event_id] for event_id in event_ids], Work.PROCESS_EVENT.queue)

    writer: InboxWriter | LoopInboxWriter
    if services.engine.dialect.name == "postgresql":
        # On PostgreSQL the writer runs on the event loop itself (psycopg's async driver), with an asyncio
        # Redis client where the broker is Redis: no thread to hand the interpreter lock to and back.
        async def publish_async(event_ids: Sequence[int]) -> None:
            args = [[event_id] for event_id in event_ids]
            if isinstance(enqueue_many, RedisWakeUps):
                await enqueue_many.push(Work.PROCESS_EVENT.value, args, Work.PROCESS_EVENT.queue)
            else:
                await asyncio.to_thread(publish, event_ids)

        conninfo = services.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        writer = LoopInboxWriter(conninfo, clock=services.clock, publish=publish_async)
    else:
        writer = InboxWriter(services.engine, clock=services.clock, publish=publish)

    database_metrics, close_metrics = database_registry(services)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await writer.aclose()  # what is queued is stored and answered before the process ends
        close_metrics()

    # No schema or docs for outsiders to read, and no redirects: Starlette's slash redirect builds its
    # Location from the request's Host header.
    app = FastAPI(title="dunlink", version="0.1.0", openapi_url=None, docs_url=None, redoc_url=None,
                  redirect_slashes=False, lifespan=lifespan)
    app.state.inbox_writer = writer
    counters: dict[tuple[str, str, int], Any] = {}

    def answer(vendor: str, event: str, status: int, body: str) -> Response:
        counter = counters.get((vendor, event, status))
        if counter is None:
            counter = counters[(vendor, event, status)] = WEBHOOKS.labels(vendor=vendor, event=event,
                                                                          answer=str(status))
        counter.inc()
        return PlainTextResponse(body, status_code=status)

    def webhook(platform: WebhookPlatform) -> Callable[[Request], Awaitable[Response]]:
        async def receive(request: Request) -> Response:
            """``POST /webhooks/<platform>/{vendor}``: 200 ``OK`` once stored, else 400, 401, 404, 413 or 503."""
            vendor: str = request.path_params["vendor"]
            try:
                body = await _read_body(request)
            except _TooLarge:
                return answer("-", "-", 413, "body larger than 256 KiB")
            except _BodyIncomplete as gone:
                # Nobody is left to answer; nothing was stored, and the platform delivers again.
                timed_out = request.scope.get(BODY_TIMED_OUT, False)
                log.info("webhook_body_incomplete", vendor=vendor if vendor in services.vendors else "-",
                         received_bytes=gone.received,
                         why="the body took longer than the time limit" if timed_out else "the client hung up")
                return Response(status_code=400)
            config = services.vendors.get(vendor)
            if config is None or config.platform != platform.name:
                return answer("-", "-", 404, "unknown vendor")
            if not platform.verify(config.webhook_secret, body, request.headers):
                return answer(vendor, "-", 401, "signature missing or wrong")
            try:
                received = platform.receive(body)
            except Unreadable as exc:
                return answer(vendor, "-", 400, str(exc))
            if isinstance(received, ConnectionCheck):
                return answer(vendor, "connection_test", 200, "OK")
            return await store(vendor, received)

        return receive

    async def store(vendor: str, received: Received) -> Response:
        event = received.event
        acted_on = event.acted_on
        event_label = event.event_type if acted_on else "other"
        try:
            await writer.store(NewEvent(vendor, event.event_type, received.dedup_key, event.order_id,
                                        received.stored), acted_on=acted_on)
        except StorageUnavailable as exc:
            log.error("inbox_unavailable", vendor=vendor, order=event.order_id, error=str(exc))
            return answer(vendor, event_label, 503, "storage unavailable, try again")
        return answer(vendor, event_label, 200, "OK")  # its webhook_stored line is the writer's

    # Plain Starlette routes, one per platform: the webhook reads its raw body and checks everything itself,
    # so FastAPI's parameter solving and validation would only cost time on every delivery (about half of the
    # framework's CPU per request).
    for name, platform in PLATFORMS.items():
        app.add_route(f"/webhooks/{name}/{{vendor}}", webhook(platform), methods=["POST"], include_in_schema=False)

    ops_token = services.settings.ops_token
    health = HealthChecks([("database", _database_probe(services))]
                          + ([("broker", check_broker)] if check_broker else []))

    async def healthz(request: Request) -> JSONResponse:
        """``GET /healthz``: 200 or 503, and only to the ops token which check failed and why."""
        checks = await health.checks()
        healthy = all(value == "ok" for value in checks.values())
        shown = {"status": "ok" if healthy else "down"}
        if ops_token_matches(ops_token, request.headers.get("authorization")):
            shown.update(checks)
        return JSONResponse(shown, status_code=200 if healthy else 503)

    async def metrics(request: Request) -> Response:
        """``GET /metrics``, for the ops token only (Prometheus sends it as its scrape's bearer token)."""
        if not ops_token_matches(ops_token, request.headers.get("authorization")):
            return PlainTextResponse("ops token missing or wrong", status_code=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="dunlink ops"'})
        payload, content_type = await run_in_threadpool(render_metrics, database_metrics)
        return Response(payload, media_type=content_type)

    app.add_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    if ops_token is not None:  # without the setting there is no /metrics at all: 404, as for any unknown path
        app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    add_vendor_routes(app, services)
    return app


# The whole health check answers within about this long, however the database or broker misbehave.
PROBE_TIMEOUT_SECONDS = 2.5
_PROBE_SOCKET_TIMEOUT = 2.0


async def _bounded(probe: Callable[[], None]) -> str:
    """``ok``, or ``down: <why>``; a probe that hangs is abandoned after ``PROBE_TIMEOUT_SECONDS``.

    Each probe also sets its own socket timeouts, so an abandoned thread ends shortly after.
    """
    try:
        await asyncio.wait_for(run_in_threadpool(probe), timeout=PROBE_TIMEOUT_SECONDS)
    except TimeoutError:
        return "down: timeout"
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


def _database_probe(services: Services) -> Callable[[], None]:
    """Open a fresh connection and read the inbox table, the one webhooks are written to.

    A fresh connection (no pool) sees what a new request would: a pooled one may still be open on a file
    that was removed, or wait behind a pool exhausted by webhook traffic. Reading a table rather than
    ``SELECT 1`` proves the schema is there and SQLite can read the file.
    """
    url = services.engine.url
    if url.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {"connect_timeout": 2,
                                        "options": f"-c statement_timeout={int(_PROBE_SOCKET_TIMEOUT * 1000)}"}
    else:
        connect_args = {"timeout": _PROBE_SOCKET_TIMEOUT}
    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)

    def probe() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1 FROM inbox_events LIMIT 1"))

    return probe


def broker_probe(url: str) -> Callable[[], None]:
    """A probe of the Celery broker: ``PING`` for Redis, a bounded connection for other transports."""
    if url.startswith(("redis://", "rediss://")):
        def ping() -> None:

            # No retries: one bounded round trip says whether the broker answers now.
            client = redis.Redis.from_url(url, socket_timeout=_PROBE_SOCKET_TIMEOUT,
                                          socket_connect_timeout=_PROBE_SOCKET_TIMEOUT,
                                          retry=Retry(NoBackoff(), 0))
            try:
                client.ping()
            finally:
                client.close()

        return ping

    def probe() -> None:

        with Connection(url, connect_timeout=_PROBE_SOCKET_TIMEOUT,  # type: ignore[no-untyped-call]
                        transport_options=transport_options(url)) as connection:
            connection.ensure_connection(max_retries=1, timeout=_PROBE_SOCKET_TIMEOUT)

    return probe
