"""The sandbox as an HTTP server: the contract's ``/v1`` order API plus the ``/sandbox`` controls.

Built on Starlette directly (no validation layer on the hot path) and served by uvicorn with one worker,
since all state lives in this process. Every call under ``/v1``, whatever its path or method, takes one
path: logged, then faults (after the body is read, before anything else is looked at, so before any
effect), then the bearer token, then the endpoint by path and by method (404 ``not_found``, 405
``method_not_allowed`` with ``Allow``), all answered in the contract's error shape. A "timeout" holds
the request until the client gives up (or the hold runs out, then answering 504) without having done
anything; the request log tells a held call from an answered one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from adapters.platform.port import Order
from dunlink.config.settings import settings
from dunlink.config.vendors import Vendor
from dunlink.sandbox.digistore24 import Digistore24Sandbox
from dunlink.sandbox.faults import HOLD_S, FaultsError, parse_faults
from dunlink.sandbox.ipn import build_ipn, encode, recurring_cancelled, sign
from dunlink.sandbox.page import payment_page
from dunlink.sandbox.state import Answer, SandboxState, error
from dunlink.webapp.serving import serve as serve_app

IPN_TIMEOUT_S = 10.0
_JSON = "application/json"
_COUNT = re.compile(r"[0-9]+")


def _json(status: int, document: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(document).encode("utf-8"), status_code=status, media_type=_JSON,
                    headers=headers)


def _answer(answer: Answer) -> Response:
    return _json(answer.status, answer.document)


def _base_url(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


async def _read_json(request: Request) -> tuple[Any, Response | None]:
    raw = await request.body()
    try:
        return json.loads(raw), None
    except ValueError:
        return None, _json(400, {"error": "invalid_json", "message": "body: must be JSON"})


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


V1Handler = Callable[[Request, bytes, Mapping[str, str]], Awaitable[tuple[Response, str | None]]]


@dataclass(frozen=True, slots=True)
class V1Endpoint:
    """One ``/v1`` method and path; ``write``: it needs an ``Idempotency-Key``."""

    method: str
    path: re.Pattern[str]
    handler: V1Handler
    write: bool


def _under_v1(path: str) -> bool:
    return path == "/v1" or path.startswith("/v1/")


def _allow(methods: list[str]) -> str:
    # A GET endpoint answers HEAD too, as Starlette's routes did.
    return ", ".join(m for method in methods for m in ((method, "HEAD") if method == "GET" else (method,)))


def create_app(*, vendors: Mapping[str, Vendor], webhook_base: str, token: str,
               timeout_hold_s: float = HOLD_S, digistore24_api_keys: Mapping[str, str] | None = None,
               digistore24_passphrases: Mapping[str, str] | None = None) -> ASGIApp:
    """The sandbox's ASGI app; ``token`` is the bearer token ``/v1`` accepts, ``timeout_hold_s`` how long a
    timeout fault holds a request whose client is still waiting (shorter only in tests). Digistore24's side
    (dunlink/sandbox/digistore24.py) knows vendors by API key (key -> slug) and signs with their passphrases."""
    state = SandboxState()
    expected = f"Bearer {token}".encode()
    webhook_base = webhook_base.rstrip("/")
    http: dict[str, httpx.AsyncClient] = {}
    ds24 = Digistore24Sandbox(state=state, webhook_base=webhook_base, http=lambda: http["client"],
                              api_keys=digistore24_api_keys, passphrases=digistore24_passphrases,
                              timeout_hold_s=timeout_hold_s)

    async def v1_call(request: Request) -> Response:
        """Every call under /v1, known or not: log it, apply faults, check the token, then route it."""
        key = request.headers.get("idempotency-key")
        record: dict[str, Any] = {"method": request.method, "path": request.url.path,
                                  "idempotency_key": key, "status": None}
        state.requests.append(record)
        body = await request.body()
        faults = state.faults
        if faults.active:
            if faults.latency_ms:
                await asyncio.sleep(faults.latency_ms / 1000)
            fault = faults.draw()
            if fault == "timeout":
                return await hold(request, record)
            if fault == "error":
                record.update(fault="error", status=faults.error_status)
                return _json(faults.error_status, {"error": "injected_fault",
                                                   "message": "injected by PUT /sandbox/faults"})
            if fault == "rate_limit":
                record.update(fault="rate_limit", status=429)
                return _json(429, {"error": "rate_limited", "message": "slow down"},
                             headers={"Retry-After": f"{faults.retry_after_s:g}"})
        response: Response
        auth = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(auth, expected):
            response = _json(401, {"error": "unauthorized", "message": "missing or wrong bearer token"})
        else:
            response, effect = await route_v1(request, body)
            if effect:
                record["effect"] = effect
        record["status"] = response.status_code
        return response

    async def hold(request: Request, record: dict[str, Any]) -> Response:
        """A timeout fault: hold the call, answering nothing, until the client gives up or the hold runs out.

        The log says which: ``hold`` is ``holding`` while held (``status`` null: nothing answered yet), then
        ``answered`` with ``status`` 504 once the hold ran out and the 504 went to the still waiting client,
        or ``client_gone`` with ``status`` left null, since the client left before anything was answered.
        """
        record.update(fault="timeout", hold="holding")
        try:
            await asyncio.wait_for(_until_disconnect(request), timeout_hold_s)
        except TimeoutError:
            record.update(hold="answered", status=504)
        else:
            record["hold"] = "client_gone"
        return _json(504, {"error": "timeout", "message": "held by an injected timeout"})

    async def route_v1(request: Request, body: bytes) -> tuple[Response, str | None]:
        """Past the faults and the token: find the endpoint by its path, then by the method (HEAD as GET)."""
        path = request.url.path
        method = "GET" if request.method == "HEAD" else request.method
        known = [(endpoint, match) for endpoint in v1_endpoints if (match := endpoint.path.fullmatch(path))]
        for endpoint, match in known:
            if endpoint.method != method:
                continue
            key = request.headers.get("idempotency-key")
            if endpoint.write and not (key and key.strip()):
                return _json(400, {"error": "missing_idempotency_key",
                                   "message": "Idempotency-Key header is required on writes"}), None
            return await endpoint.handler(request, body, match.groupdict())
        if not known:
            return _json(404, {"error": "not_found", "message": f"no such endpoint: {path}"}), None
        allow = _allow([endpoint.method for endpoint, _ in known])
        return _json(405, {"error": "method_not_allowed",
                           "message": f"{request.method} is not allowed on {path}; use {allow}"},
                     headers={"Allow": allow}), None

    async def get_order(_request: Request, _body: bytes, params: Mapping[str, str]) -> tuple[Response, str | None]:
        wire = state.get(params["order_id"])
        if wire is None:
            return _json(404, {"error": "not_found", "message": "no such order"}), None
        return Response(wire, media_type=_JSON), None

    def parse(body: bytes) -> Any:
        try:
            return json.loads(body)
        except ValueError:
            return None

    async def create_order(request: Request, body: bytes, _params: Mapping[str, str]) -> tuple[Response, str | None]:
        document = parse(body)
        if not isinstance(document, dict):
            return _json(422, {"error": "invalid_order", "message": "body: must be a JSON object"}), None
        answer = state.create(document, key=request.headers["idempotency-key"], base_url=_base_url(request))
        return _answer(answer), answer.effect

    async def cancel_order(request: Request, body: bytes, params: Mapping[str, str]) -> tuple[Response, str | None]:
        answer = state.cancel(params["order_id"], parse(body), key=request.headers["idempotency-key"])
        return _answer(answer), answer.effect

    order_id = "(?P<order_id>[^/]+)"
    v1_endpoints = (
        V1Endpoint("GET", re.compile(f"/v1/orders/{order_id}"), get_order, write=False),
        V1Endpoint("POST", re.compile("/v1/orders"), create_order, write=True),
        V1Endpoint("POST", re.compile(f"/v1/orders/{order_id}/cancel"), cancel_order, write=True),
    )

    # -- /sandbox ------------------------------------------------------------------------------------

    async def seed_order(request: Request) -> Response:
        document, bad = await _read_json(request)
        return bad or _answer(state.seed(document, base_url=_base_url(request)))

    async def list_orders(request: Request) -> Response:
        replaces = request.query_params.get("replaces")
        return _json(200, [o.to_json() for o in state.orders.values()
                           if replaces is None or o.replaces == replaces])

    async def installment(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ("fail", "pay"):
            return _json(404, {"error": "not_found", "message": "use .../fail or .../pay"})
        order_id, number = request.path_params["order_id"], request.path_params["number"]
        known = state.orders.get(order_id)
        if known is not None and known.vendor not in vendors:
            return _answer(error(422, "unknown_vendor",
                                 f"vendor {known.vendor!r} is not in the vendors file: can't sign its IPN"))
        order = state.set_installment(order_id, number, "failed" if action == "fail" else "paid")
        if isinstance(order, Answer):
            return _answer(order)
        payload = build_ipn(order, number, action=action, transaction_id=state.next_transaction_id(),
                            ordered_at=state.ordered_at[order.id], now=datetime.now(UTC))
        return _json(200, {"order": order.to_json(), "delivery": await deliver(order, payload)})

    async def deliver(order: Order, payload: dict[str, Any]) -> dict[str, Any]:
        """Sign and send one IPN to dunlink, log it for tests; the delivery's outcome, never an exception."""
        raw = encode(payload)
        signature = sign(vendors[order.vendor].copecart_ipn_secret, raw)
        url = f"{webhook_base}/webhooks/copecart/{order.vendor}"
        delivery: dict[str, Any] = {"url": url, "status": None, "body": None, "error": None}
        try:
            answered = await http["client"].post(url, content=raw, headers={
                "Content-Type": _JSON, "X-Copecart-Signature": signature})
            delivery.update(status=answered.status_code, body=answered.text)
        except httpx.HTTPError as exc:
            delivery["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        state.ipns.append({"vendor": order.vendor, "url": url, "event_type": payload["event_type"],
                           "order_id": order.id, "transaction_id": payload["transaction_id"],
                           "body": raw.decode("utf-8"), "signature": signature,
                           "status": delivery["status"]})
        return delivery

    async def phone_offer(request: Request) -> Response:
        """``POST /sandbox/phone-offers``: the order CopeCart's phone option makes, with its payment link."""
        document, bad = await _read_json(request)
        if bad:
            return bad
        if isinstance(document, dict) and document.get("vendor") not in vendors:
            return _answer(error(422, "unknown_vendor", "vendor: not in the vendors file"))
        return _answer(state.phone_offer(document, base_url=_base_url(request)))

    async def vendor_cancel(request: Request) -> Response:
        """``POST /sandbox/orders/{id}/vendor-cancel``: the vendor cancels the order in CopeCart; its
        ``payment.recurring.cancelled`` IPN is delivered."""
        known = state.orders.get(request.path_params["order_id"])
        if known is not None and known.vendor not in vendors:
            return _answer(error(422, "unknown_vendor",
                                 f"vendor {known.vendor!r} is not in the vendors file: can't sign its IPN"))
        order = state.vendor_cancel(request.path_params["order_id"])
        if isinstance(order, Answer):
            return _answer(order)
        payload = recurring_cancelled(order, transaction_id=state.next_transaction_id(),
                                      ordered_at=state.ordered_at[order.id], now=datetime.now(UTC))
        return _json(200, {"order": order.to_json(), "delivery": await deliver(order, payload)})

    async def requests_log(_request: Request) -> Response:
        return _json(200, state.requests)

    async def ipns_log(request: Request) -> Response:
        # ``after=N``: only the entries after the first N, so a poller reads each delivery once.
        after = request.query_params.get("after", "0")
        if not _COUNT.fullmatch(after):
            return _json(400, {"error": "invalid_after",
                               "message": f"after: must be a whole number of entries, 0 or more; got {after!r}"})
        return _json(200, state.ipns[int(after):])

    async def put_faults(request: Request) -> Response:
        document, bad = await _read_json(request)
        if bad:
            return bad
        try:
            state.faults = parse_faults(document)
        except FaultsError as exc:
            return _json(422, {"error": "invalid_faults", "message": str(exc)})
        return _json(200, state.faults.to_json())

    async def delete_faults(_request: Request) -> Response:
        state.faults = parse_faults({})
        return _json(200, state.faults.to_json())

    async def reset(_request: Request) -> Response:
        state.reset()
        ds24.reset()
        return _json(200, {"reset": True})

    async def pay_page(request: Request) -> Response:
        order = state.orders.get(request.path_params["order_id"])
        if order is None:
            return HTMLResponse("<!doctype html><title>Not found</title><p>No such order.</p>", 404)
        return HTMLResponse(payment_page(order))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=IPN_TIMEOUT_S) as client:
            http["client"] = client
            yield

    sandbox = Starlette(routes=[
        Route("/sandbox/orders", seed_order, methods=["POST"]),
        Route("/sandbox/orders", list_orders, methods=["GET"]),
        Route("/sandbox/orders/{order_id}/installments/{number:int}/{action}", installment, methods=["POST"]),
        Route("/sandbox/phone-offers", phone_offer, methods=["POST"]),
        Route("/sandbox/orders/{order_id}/vendor-cancel", vendor_cancel, methods=["POST"]),
        Route("/sandbox/requests", requests_log, methods=["GET"]),
        Route("/sandbox/ipns", ipns_log, methods=["GET"]),
        Route("/sandbox/faults", put_faults, methods=["PUT"]),
        Route("/sandbox/faults", delete_faults, methods=["DELETE"]),
        Route("/sandbox/reset", reset, methods=["POST"]),
        Route("/pay/{order_id}", pay_page, methods=["GET"]),
        *ds24.routes,
    ], lifespan=lifespan)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Every path and method under /v1 to one handler, so none can answer past the log and the token.
        if scope["type"] == "http" and _under_v1(scope["path"]):
            response = await v1_call(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await sandbox(scope, receive, send)

    return app


def serve(*, host: str, port: int, webhook_base: str, vendors: Mapping[str, Vendor],
          timeout_hold_s: float = HOLD_S) -> int:
    """Run the sandbox until interrupted (the exit status); the bearer token is ``DUNLINK_PLATFORM_TOKEN``."""

    # Digistore24's side answers each vendor's API key and signs with its IPN passphrase, from the vendors file.
    selling = {slug: vendor for slug, vendor in vendors.items() if vendor.platform == "digistore24"}
    app = create_app(vendors={slug: v for slug, v in vendors.items() if v.platform == "copecart"},
                     webhook_base=webhook_base, token=settings().platform_token, timeout_hold_s=timeout_hold_s,
                     digistore24_api_keys={v.digistore24_api_key: slug for slug, v in selling.items()},
                     digistore24_passphrases={slug: v.digistore24_ipn_passphrase for slug, v in selling.items()})
    return serve_app(app, name="sandbox", host=host, port=port,
                     about=f"(IPNs to {webhook_base.rstrip('/')}/webhooks/<platform>/<vendor>, "
                           f"vendors: {', '.join(sorted(vendors))})",
                     timeout_graceful_shutdown=2, server_header=False)
