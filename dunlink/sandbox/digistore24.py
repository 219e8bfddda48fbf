"""The sandbox's Digistore24 side: the API functions dunlink calls, and controls that make Digistore24's IPNs.

Routes (``Digistore24Sandbox.routes``, mounted by ``dunlink/sandbox/server.py``)::

    POST /api/call/{function}      getPurchase, createBuyUrl, stopRebilling; getPurchase also as GET with query
                                   parameters (Digistore24's OpenAPI describes it so); /api/call/{function}/format/json
                                   is the same call (Digistore24's own app kit calls that)
    POST /sandbox/digistore24/purchases                        seed a purchase (shape: ds24_purchases) → 201
    GET  /sandbox/digistore24/purchases[?vendor=&custom=]      the sandbox's view of the purchases
    GET  /sandbox/digistore24/purchases/{id}                   one of them; 404 unknown
    POST /sandbox/digistore24/purchases/{id}/payments/{n}/missed   → on_payment_missed (pay_sequence_no n)
    POST /sandbox/digistore24/purchases/{id}/payments/{n}/paid     → on_payment; n must be the next payment
    GET  /sandbox/digistore24/buy-urls[?vendor=&custom=]       every link createBuyUrl made, with its plan and tracking
    POST /sandbox/digistore24/buy-urls/{id}/pay                the buyer pays through the link → 201: a new purchase,
                                                               and on_payment carrying the link's tracking as custom
    GET  /ds24/buy/{id}                                        the link's order form; 410 once it expired

The controls answer like the CopeCart ones: the purchase and the IPN's ``delivery`` (url, status, body, error),
every delivery also in ``GET /sandbox/ipns`` (with ``"platform": "digistore24"``). IPNs are posted form-encoded to
``{webhook_base}/webhooks/digistore24/{vendor}``, signed with the vendor's IPN passphrase; a vendor without one is
refused (422) before anything changes.

An API call takes one path, as ``/v1`` calls do: logged in ``GET /sandbox/requests`` (``method``, ``path``,
``idempotency_key`` always null since Digistore24 has none, ``status``, ``function``, and ``error``, ``effect`` or
``fault``), then the faults of ``PUT /sandbox/faults`` (before anything is looked at, so before any effect), then
the ``X-DS-API-KEY`` header, the function, its parameters. Errors come in Digistore24's envelope with HTTP 200 and
its ``DS_ERR_*`` codes, as its PHP connector reads them: an unknown key is 2, bad parameters 3, a purchase or
product the key's vendor does not have 4 (another vendor's purchase does not exist for it), a function the
sandbox does not serve 9. A known function called with a method it does not take is HTTP 405 with ``Allow``.
``stopRebilling`` delivers ``on_rebill_cancelled`` after answering, as Digistore24 sends it at once but apart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import itertools
import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from dunlink.sandbox.ds24_ipn import missed_ipn, payment_ipn, rebill_cancelled_ipn, signed_body
from dunlink.sandbox.ds24_links import BuyLink, buy_link
from dunlink.sandbox.ds24_page import buy_page
from dunlink.sandbox.ds24_purchases import ApiError, Purchase, Purchases, Refused, timestamp
from dunlink.sandbox.faults import HOLD_S
from dunlink.sandbox.state import SandboxState
from platforms.digistore24.api import ERROR_CODES

API_VERSION = "1.2"
FUNCTIONS = {"getPurchase": ("GET", "POST"), "createBuyUrl": ("POST",), "stopRebilling": ("POST",)}
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_YES, _NO = ("y", "yes", "true", "1"), ("n", "no", "false", "0", "")
_FORM = "application/x-www-form-urlencoded"


def _json(status: int, document: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(document).encode("utf-8"), status_code=status, media_type="application/json",
                    headers=headers)


def _refused(exc: Refused) -> Response:
    return _json(exc.status, {"error": exc.code, "message": exc.message})


def _base_url(request: Request) -> str:
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Digistore24Sandbox:
    """Digistore24's API and IPNs for the sandbox; ``api_keys`` maps an API key to its vendor's slug,
    ``passphrases`` a vendor's slug to its IPN passphrase. ``state`` is the sandbox's own, shared for the
    request log, the faults and the IPN log; ``http`` gives the client IPNs are posted with; ``clock`` tells
    the time (links expire by it)."""

    def __init__(self, *, state: SandboxState, webhook_base: str, http: Callable[[], httpx.AsyncClient],
                 api_keys: Mapping[str, str] | None = None, passphrases: Mapping[str, str] | None = None,
                 timeout_hold_s: float = HOLD_S, clock: Callable[[], dt.datetime] = _now) -> None:
        self._state = state
        self._clock = clock
        self._webhook_base = webhook_base.rstrip("/")
        self._http = http
        self._api_keys = dict(api_keys or {})
        self._passphrases = dict(passphrases or {})
        self._hold_s = timeout_hold_s
        self._link_numbers = itertools.count(342000001)
        self.purchases = Purchases()
        self.links: dict[str, BuyLink] = {}
        self.routes = [
            Route("/api/call/{tail:path}", self.api_call, methods=_ALL_METHODS),
            Route("/sandbox/digistore24/purchases", self.seed, methods=["POST"]),
            Route("/sandbox/digistore24/purchases", self.list_purchases, methods=["GET"]),
            Route("/sandbox/digistore24/purchases/{purchase_id}", self.show_purchase, methods=["GET"]),
            Route("/sandbox/digistore24/purchases/{purchase_id}/payments/{number:int}/{action}", self.payment,
                  methods=["POST"]),
            Route("/sandbox/digistore24/buy-urls", self.list_links, methods=["GET"]),
            Route("/sandbox/digistore24/buy-urls/{link_id}/pay", self.pay_link, methods=["POST"]),
            Route("/ds24/buy/{link_id}", self.buy_page, methods=["GET"]),
        ]

    def reset(self) -> None:
        """Forget every purchase and link (``POST /sandbox/reset``); ids are not reused afterwards."""
        self.purchases.reset()
        self.links = {}

    # -- /api/call ------------------------------------------------------------------------------------------

    async def api_call(self, request: Request) -> Response:
        """Every call under /api/call: log it, apply faults, check the key, then run the function."""
        started = time.monotonic()
        record: dict[str, Any] = {"method": request.method, "path": request.url.path, "idempotency_key": None,
                                  "status": None}
        self._state.requests.append(record)
        body = await request.body()
        faulted = await self._fault(request, record)
        if faulted is not None:
            return faulted
        function = _function_of(request.path_params["tail"])
        record["function"] = function
        background: BackgroundTask | None = None
        try:
            vendor = self._vendor_of(request.headers.get("x-ds-api-key"))
            allowed = FUNCTIONS.get(function)
            if allowed is None:
                raise ApiError(ApiError.BAD_API_CALL, f"Invalid function call: {function or '(none)'} (the dunlink "
                                                      f"sandbox serves {', '.join(FUNCTIONS)})")
            method = "GET" if request.method == "HEAD" else request.method
            if method not in allowed:
                record["status"] = 405
                return self._envelope(started, 405, {"result": "error", "code": ApiError.BAD_API_CALL,
                                                     "message": f"{function} takes {' or '.join(allowed)}"},
                                      headers={"Allow": ", ".join(allowed)})
            params = _params(request, body)
            data, effect, background = self._run(function, vendor, params, request)
        except ApiError as exc:
            record["error"] = ERROR_CODES.get(exc.code, f"code_{exc.code}")
            response = self._envelope(started, 200, {"result": "error", "code": exc.code, "message": exc.message})
        else:
            if effect:
                record["effect"] = effect
            response = self._envelope(started, 200, {"result": "success", "data": data}, background=background)
        record["status"] = response.status_code
        return response

    def _run(self, function: str, vendor: str, params: dict[str, str],
             request: Request) -> tuple[Any, str | None, BackgroundTask | None]:
        """The function's ``data``, the effect it had (for the log), and an IPN to deliver after answering."""
        now = self._clock()
        if function == "getPurchase":
            return self._get_purchase(vendor, params), None, None
        if function == "createBuyUrl":
            link_id = str(next(self._link_numbers))
            link = buy_link(params, vendor=vendor, purchases=self.purchases, link_id=link_id,
                            url=f"{_base_url(request)}/ds24/buy/{link_id}", now=now)
            self.links[link.id] = link
            return link.api_data(), "created", None
        purchase = self._purchase(vendor, params, "stopRebilling")
        _flag(params, "force", "stopRebilling")
        _flag(params, "ignore_refund_possibility", "stopRebilling")
        # The sandbox knows no minimum terms, so with or without force the rebilling stops now.
        modified = purchase.stop(now)
        effect = "stopped" if modified else ("already_stopped" if purchase.billing_status == "aborted" else None)
        background = BackgroundTask(self._deliver, purchase, rebill_cancelled_ipn(purchase)) if modified else None
        return purchase.stop_data(modified=modified), effect, background

    def _get_purchase(self, vendor: str, params: dict[str, str]) -> Any:
        ids = [part.strip() for part in params.get("purchase_id", "").split(",") if part.strip()]
        if not ids:
            raise ApiError(ApiError.BAD_FUNCTION_PARAMS,
                           "Invalid parameters for function call getPurchase(): purchase_id is required")
        found = [self._purchase(vendor, {"purchase_id": one}, "getPurchase") for one in ids]
        if len(found) == 1:
            return found[0].api_data()
        return {purchase.id: purchase.api_data() for purchase in found}

    def _purchase(self, vendor: str, params: dict[str, str], function: str) -> Purchase:
        purchase_id = params.get("purchase_id", "").strip()
        if not purchase_id:
            raise ApiError(ApiError.BAD_FUNCTION_PARAMS,
                           f"Invalid parameters for function call {function}(): purchase_id is required")
        purchase = self.purchases.of_vendor(vendor, purchase_id)
        if purchase is None:
            raise ApiError(ApiError.NOT_FOUND, f"Not found: {purchase_id}")
        return purchase

    def _vendor_of(self, api_key: str | None) -> str:
        """The vendor whose key this is, compared in constant time; none is ``DS_ERR_BAD_API_KEY``."""
        given = (api_key or "").encode("utf-8")
        found = None
        for key, vendor in self._api_keys.items():
            if hmac.compare_digest(given, key.encode("utf-8")):
                found = vendor
        if not given or found is None:
            raise ApiError(ApiError.BAD_API_KEY, "Invalid connection parameters.")
        return found

    def _envelope(self, started: float, status: int, rest: dict[str, Any], *, headers: Mapping[str, str] | None = None,
                  background: BackgroundTask | None = None) -> Response:
        document = {"api_version": API_VERSION, "current_time": timestamp(self._clock()),
                    "runtime_seconds": round(time.monotonic() - started, 3), **rest}
        response = _json(status, document, headers=headers)
        response.background = background
        return response

    async def _fault(self, request: Request, record: dict[str, Any]) -> Response | None:
        """The fault drawn for this call, answered before anything else, or None (same faults as /v1)."""
        faults = self._state.faults
        if not faults.active:
            return None
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        fault = faults.draw()
        if fault == "timeout":
            record.update(fault="timeout", hold="holding")
            try:
                await asyncio.wait_for(_until_disconnect(request), self._hold_s)
            except TimeoutError:
                record.update(hold="answered", status=504)
            else:
                record["hold"] = "client_gone"
            return _json(504, {"result": "error", "code": 0, "message": "held by an injected timeout"})
        if fault == "error":
            record.update(fault="error", status=faults.error_status)
            return _json(faults.error_status, {"result": "error", "code": 0,
                                               "message": "injected by PUT /sandbox/faults"})
        if fault == "rate_limit":
            record.update(fault="rate_limit", status=429)
            return _json(429, {"result": "error", "code": 0, "message": "slow down"},
                         headers={"Retry-After": f"{faults.retry_after_s:g}"})
        return None

    # -- IPN delivery -------------------------------------------------------------------------------------

    def _check_signable(self, vendor: str) -> None:
        if not self._passphrases.get(vendor):
            raise Refused(422, "unknown_vendor", f"vendor {vendor!r} has no Digistore24 IPN passphrase: "
                                                 "can't sign its IPN")

    async def _deliver(self, purchase: Purchase, fields: dict[str, str]) -> dict[str, Any]:
        """Post the signed IPN to the vendor's webhook; the delivery as the controls answer it."""
        url = f"{self._webhook_base}/webhooks/digistore24/{purchase.vendor}"
        delivery: dict[str, Any] = {"url": url, "status": None, "body": None, "error": None}
        entry: dict[str, Any] = {"platform": "digistore24", "vendor": purchase.vendor, "url": url,
                                 "event_type": fields["event"], "order_id": purchase.id,
                                 "transaction_id": fields.get("transaction_id"), "body": None, "signature": None,
                                 "status": None}
        passphrase = self._passphrases.get(purchase.vendor)
        if not passphrase:
            delivery["error"] = "no Digistore24 IPN passphrase for this vendor: not sent"
            self._state.ipns.append(entry)
            return delivery
        body, signature = signed_body(fields, passphrase)
        entry.update(body=body.decode("ascii"), signature=signature)
        try:
            answered = await self._http().post(url, content=body, headers={"Content-Type": _FORM})
            delivery.update(status=answered.status_code, body=answered.text)
        except httpx.HTTPError as exc:
            delivery["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        entry["status"] = delivery["status"]
        self._state.ipns.append(entry)
        return delivery

    # -- /sandbox/digistore24 and the order form ----------------------------------------------------------

    async def seed(self, request: Request) -> Response:
        try:
            document = json.loads(await request.body())
        except ValueError:
            return _json(400, {"error": "invalid_json", "message": "body: must be JSON"})
        try:
            purchase = self.purchases.seed(document, now=self._clock())
        except Refused as exc:
            return _refused(exc)
        return _json(201, purchase.to_json())

    async def list_purchases(self, request: Request) -> Response:
        wanted = _filters(request)
        return _json(200, [p.to_json() for p in self.purchases.by_id.values()
                           if all(getattr(p, key) == value for key, value in wanted.items())])

    async def show_purchase(self, request: Request) -> Response:
        purchase = self.purchases.by_id.get(request.path_params["purchase_id"])
        if purchase is None:
            return _json(404, {"error": "not_found", "message": "no such purchase"})
        return _json(200, purchase.to_json())

    async def payment(self, request: Request) -> Response:
        """A payment of the plan missed or paid, and the IPN Digistore24 sends for it."""
        action, number = request.path_params["action"], request.path_params["number"]
        if action not in ("missed", "paid"):
            return _json(404, {"error": "not_found", "message": "use .../missed or .../paid"})
        purchase_id = request.path_params["purchase_id"]
        purchase = self.purchases.by_id.get(purchase_id)
        try:
            if purchase is None:
                raise Refused(404, "not_found", f"no purchase {purchase_id!r}")
            self._check_signable(purchase.vendor)
            transaction = self.purchases.set_payment(purchase, number, action, self._clock())
        except Refused as exc:
            return _refused(exc)
        fields = missed_ipn(purchase, number) if transaction is None else payment_ipn(purchase, transaction)
        delivery = await self._deliver(purchase, fields)
        return _json(200, {"purchase": purchase.to_json(), "delivery": delivery})

    async def list_links(self, request: Request) -> Response:
        wanted = _filters(request)
        return _json(200, [link.to_json() for link in self.links.values()
                           if ("vendor" not in wanted or link.vendor == wanted["vendor"])
                           and ("custom" not in wanted or link.tracking.get("custom", "") == wanted["custom"])])

    async def pay_link(self, request: Request) -> Response:
        """The buyer pays through the link: the purchase it makes, and its ``on_payment`` with ``custom``."""
        link = self.links.get(request.path_params["link_id"])
        now = self._clock()
        try:
            if link is None:
                raise Refused(404, "not_found", "no such buy URL")
            if link.expired(now):
                raise Refused(410, "link_expired", f"buy URL {link.id} expired at {link.valid_until}")
            if "email" not in link.buyer:
                raise Refused(422, "no_buyer_email", "the link names no buyer e-mail; the sandbox's buyer can't "
                                                     "type one: create the link with buyer[email]")
            self._check_signable(link.vendor)
        except Refused as exc:
            return _refused(exc)
        purchase = link.purchase(self.purchases, now)
        transaction = self.purchases.pay(purchase, 1, now)
        delivery = await self._deliver(purchase, payment_ipn(purchase, transaction))
        return _json(201, {"purchase": purchase.to_json(), "delivery": delivery})

    async def buy_page(self, request: Request) -> Response:
        link = self.links.get(request.path_params["link_id"])
        if link is None:
            return HTMLResponse("<!doctype html><title>Not found</title><p>No such payment link.</p>", 404)
        status, page = buy_page(link, now=self._clock())
        return HTMLResponse(page, status)


def _function_of(tail: str) -> str:
    """``getPurchase`` from ``getPurchase`` or ``getPurchase/format/json``; anything longer names no function."""
    function, _, rest = tail.partition("/")
    return function if rest in ("", "format/json") else tail


def _params(request: Request, body: bytes) -> dict[str, str]:
    """Query parameters, then the form body over them (Digistore24 reads both; a name sent twice: the last)."""
    params = dict(request.query_params)
    try:
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(ApiError.BAD_FUNCTION_PARAMS, "Invalid parameters: the body is not form-encoded UTF-8") from None
    return params


def _flag(params: Mapping[str, str], key: str, function: str) -> bool:
    """A Digistore24 boolean: ``Y``/``N`` (also ``1``/``0``, ``true``/``false``); absent is no."""
    value = params.get(key, "").strip().lower()
    if value not in _YES + _NO:
        raise ApiError(ApiError.BAD_FUNCTION_PARAMS,
                       f"Invalid parameters for function call {function}(): {key} must be Y or N")
    return value in _YES


def _filters(request: Request) -> dict[str, str]:
    return {key: request.query_params[key] for key in ("vendor", "custom") if key in request.query_params}
