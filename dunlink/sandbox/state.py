"""The sandbox's memory: orders, idempotency keys, and the logs tests read.

Every method here is synchronous and the server runs one event loop, so a check and the insert that
follows it can't interleave with another request: two simultaneous creates with one key make one order.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from adapters.platform.port import InvalidShape, NewOrder, Order
from domain.money import MoneyError, exponent
from dunlink.sandbox.faults import Faults


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer from the order logic: status, JSON document, and what it did (for the request log)."""

    status: int
    document: Any
    effect: str | None = None


def error(status: int, code: str, message: str) -> Answer:
    return Answer(status, {"error": code, "message": message})


class SandboxState:
    def __init__(self) -> None:
        # Ids and transaction ids survive a reset so a pipeline database never sees one reused.
        self._order_numbers = itertools.count(900001)
        self._transaction_numbers = itertools.count(500001)
        self.reset()

    def reset(self) -> None:
        self.orders: dict[str, Order] = {}
        self.wire: dict[str, bytes] = {}
        self.ordered_at: dict[str, datetime] = {}
        self.keys: dict[str, tuple[str, str]] = {}
        self.requests: list[dict[str, Any]] = []
        self.ipns: list[dict[str, Any]] = []
        self.faults = Faults()

    def next_transaction_id(self) -> str:
        return f"T-SBX-{next(self._transaction_numbers)}"

    def store(self, order: Order) -> Order:
        self.orders[order.id] = order
        self.wire[order.id] = json.dumps(order.to_json()).encode("utf-8")
        self.ordered_at.setdefault(order.id, datetime.now(UTC))
        return order

    # -- /sandbox/orders -----------------------------------------------------------------------------

    def seed(self, body: Any, *, base_url: str) -> Answer:
        try:
            if isinstance(body, dict):
                body = {**body, "payment_url": None}
            order = Order.parse(body)
            _check_currency(order.currency)
        except InvalidShape as exc:
            return error(422, "invalid_order", str(exc))
        if order.id in self.orders:
            return error(409, "order_exists", f"order {order.id!r} already exists")
        stored = self.store(dataclasses.replace(order, payment_url=f"{base_url}/pay/{order.id}"))
        return Answer(201, stored.to_json())

    def phone_offer(self, body: Any, *, base_url: str) -> Answer:
        """What CopeCart's phone option makes for a vendor: a new order for the buyer with the amounts the vendor
        entered, and its payment link. No key: each offer is a new order, as each click in CopeCart is."""
        if not isinstance(body, dict):
            return error(422, "invalid_order", "body: must be a JSON object")
        try:
            new = NewOrder.parse({"replaces": None, "metadata": {}, **body})
            _check_currency(new.currency)
        except InvalidShape as exc:
            return error(422, "invalid_order", str(exc))
        name = body.get("product_name")
        if not isinstance(name, str) or not name.strip():
            same = next((o for o in self.orders.values() if o.product_id == new.product_id), None)
            name = same.product_name if same else new.product_id
        order_id = self._new_id()
        order = self.store(Order(
            id=order_id, vendor=new.vendor, status="active", product_id=new.product_id, product_name=name,
            buyer=new.buyer, currency=new.currency, plan=new.plan, payment_url=f"{base_url}/pay/{order_id}",
            replaces=None))
        return Answer(201, order.to_json(), effect="phone_offer")

    def vendor_cancel(self, order_id: str) -> Order | Answer:
        """The vendor cancels an order in CopeCart's back office (no key: it is a click)."""
        order = self.orders.get(order_id)
        if order is None:
            return error(404, "not_found", f"no order {order_id!r}")
        if order.status == "completed":
            return error(409, "order_completed", f"order {order_id!r} is completed and can't be cancelled")
        return self.store(dataclasses.replace(order, status="cancelled"))

    def set_installment(self, order_id: str, number: int, status: str) -> Order | Answer:
        """fail/pay: set one installment's status; paying the last open one completes an active order."""
        order = self.orders.get(order_id)
        if order is None:
            return error(404, "not_found", f"no order {order_id!r}")
        if not 1 <= number <= len(order.plan.installments):
            return error(404, "installment_not_found", f"order {order_id!r} has no installment {number}")
        installments = tuple(dataclasses.replace(i, status=status) if i.number == number else i
                             for i in order.plan.installments)
        order_status = order.status
        if order_status == "active" and all(i.status in ("paid", "void") for i in installments):
            order_status = "completed"
        return self.store(dataclasses.replace(
            order, status=order_status, plan=dataclasses.replace(order.plan, installments=installments)))

    # -- /v1 -----------------------------------------------------------------------------------------

    def get(self, order_id: str) -> bytes | None:
        return self.wire.get(order_id)

    def create(self, body: Any, *, key: str, base_url: str) -> Answer:
        fingerprint = _fingerprint("create", body)
        replay = self._replay(key, fingerprint, status=201)
        if replay is not None:
            return replay
        try:
            new = NewOrder.parse(body)
            _check_currency(new.currency)
        except InvalidShape as exc:
            return error(422, "invalid_order", str(exc))
        name = body.get("product_name")
        replaced = self.orders.get(new.replaces) if new.replaces else None
        if not isinstance(name, str) or not name.strip():
            name = replaced.product_name if replaced else new.product_id
        order_id = self._new_id()
        order = self.store(Order(
            id=order_id, vendor=new.vendor, status="active", product_id=new.product_id, product_name=name,
            buyer=new.buyer, currency=new.currency, plan=new.plan, payment_url=f"{base_url}/pay/{order_id}",
            replaces=new.replaces))
        self.keys[key] = (fingerprint, order_id)
        return Answer(201, order.to_json(), effect="created")

    def cancel(self, order_id: str, body: Any, *, key: str) -> Answer:
        if not isinstance(body, dict) or not isinstance(body.get("reason"), str) or not body["reason"].strip():
            return error(422, "invalid_request", "reason: must be a non-empty string")
        fingerprint = _fingerprint("cancel", [order_id, body])
        replay = self._replay(key, fingerprint, status=200)
        if replay is not None:
            return replay
        order = self.orders.get(order_id)
        if order is None:
            return error(404, "not_found", f"no order {order_id!r}")
        self.keys[key] = (fingerprint, order_id)
        if order.status == "completed":
            return error(409, "order_completed", f"order {order_id!r} is completed and can't be cancelled")
        if order.status == "cancelled":
            return Answer(200, order.to_json(), effect="already_cancelled")
        return Answer(200, self.store(dataclasses.replace(order, status="cancelled")).to_json(),
                      effect="cancelled")

    def _replay(self, key: str, fingerprint: str, *, status: int) -> Answer | None:
        seen = self.keys.get(key)
        if seen is None:
            return None
        if seen[0] != fingerprint:
            return error(422, "idempotency_key_reused",
                         "this Idempotency-Key was already used with another request")
        order = self.orders[seen[1]]
        if fingerprint.startswith('["cancel"') and order.status == "completed":
            return error(409, "order_completed", f"order {order.id!r} is completed and can't be cancelled")
        return Answer(status, order.to_json(), effect="replayed")

    def _new_id(self) -> str:
        while True:
            order_id = f"CC-{next(self._order_numbers)}"
            if order_id not in self.orders:
                return order_id


def _fingerprint(method: str, body: Any) -> str:
    return json.dumps([method, body], sort_keys=True, separators=(",", ":"))


def _check_currency(currency: str) -> None:
    try:
        exponent(currency)
    except MoneyError:
        raise InvalidShape("currency", f"unsupported currency {currency}") from None
