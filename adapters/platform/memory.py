"""An in-process platform with the sandbox's semantics, for unit tests of the pipeline.

It is checked by the same contract suite as :class:`~adapters.platform.http.HttpPlatform` against the
sandbox, so a pipeline test passing here means the same calls work against the real API.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from adapters.platform.errors import OrderCompleted, OrderNotFound, PlatformError, Rejected, Unauthorized
from adapters.platform.port import InvalidShape, NewOrder, Order
from domain.money import MoneyError, exponent


@dataclass(frozen=True, slots=True)
class PlatformCall:
    """One call the pipeline made, as the platform's request log would show it."""

    method: str
    order_id: str | None
    idempotency_key: str | None
    outcome: str


class InMemoryPlatform:
    """Implements :class:`~adapters.platform.port.PlatformPort` in memory.

    Test helpers: :meth:`seed` stores orders as given, :meth:`fail_next` makes the next calls raise (before
    any effect, like the sandbox's faults), :attr:`calls` records every call with its outcome.
    """

    def __init__(self, *, base_url: str = "http://127.0.0.1:8090", first_id: int = 900001) -> None:
        self._base_url = base_url.rstrip("/")
        self._next_id = first_id
        self._orders: dict[str, Order] = {}
        self._keys: dict[str, tuple[str, str]] = {}
        self._faults: list[PlatformError] = []
        self._revoked = False
        self.calls: list[PlatformCall] = []

    # -- test helpers ---------------------------------------------------------------------------------

    def seed(self, *orders: Order) -> None:
        """Store orders as given (ids and installment statuses too) with the platform's payment link."""
        for order in orders:
            self._orders[order.id] = dataclasses.replace(order, payment_url=f"{self._base_url}/pay/{order.id}")

    def fail_next(self, *errors: PlatformError) -> None:
        """The next ``len(errors)`` calls raise these, one each, without any effect."""
        self._faults.extend(errors)

    def revoke_token(self) -> None:
        """Every later call raises :class:`Unauthorized`, as after a token was revoked."""
        self._revoked = True

    def order(self, order_id: str) -> Order:
        return self._orders[order_id]

    def orders(self) -> list[Order]:
        return list(self._orders.values())

    def orders_replacing(self, order_id: str) -> list[Order]:
        return [o for o in self._orders.values() if o.replaces == order_id]

    def set_installment_status(self, order_id: str, number: int, status: str) -> Order:
        """What the sandbox's fail/pay endpoints do to an order, without the IPN."""
        order = self._orders[order_id]
        plan = order.plan
        installments = tuple(dataclasses.replace(i, status=status) if i.number == number else i
                             for i in plan.installments)
        order_status = order.status
        if order_status == "active" and all(i.status in ("paid", "void") for i in installments):
            order_status = "completed"
        updated = dataclasses.replace(order, status=order_status,
                                      plan=dataclasses.replace(plan, installments=installments))
        self._orders[order_id] = updated
        return updated

    # -- the port ------------------------------------------------------------------------------------

    def get_order(self, order_id: str) -> Order:
        self._fault("get", order_id, None)
        order = self._orders.get(order_id)
        self._record("get", order_id, None, "ok" if order else "not_found")
        if order is None:
            raise OrderNotFound(f"no order {order_id!r}")
        return order

    def create_order(self, order: NewOrder, *, idempotency_key: str) -> Order:
        self._fault("create", None, idempotency_key)
        fingerprint = _fingerprint("create", None, order.to_json())
        replay = self._replay(idempotency_key, fingerprint, "create", None)
        if replay is not None:
            return replay
        try:
            # The same checks the sandbox applies to the request body, so the two can't drift apart.
            NewOrder.parse(order.to_json())
            exponent(order.currency)
        except (InvalidShape, MoneyError) as exc:
            self._record("create", None, idempotency_key, "invalid")
            raise Rejected(f"invalid order: {exc}", status=422, code="invalid_order") from None
        order_id = self._new_id()
        replaced = self._orders.get(order.replaces) if order.replaces else None
        created = Order(
            id=order_id, vendor=order.vendor, status="active", product_id=order.product_id,
            product_name=replaced.product_name if replaced else order.product_id, buyer=order.buyer,
            currency=order.currency, plan=order.plan, payment_url=f"{self._base_url}/pay/{order_id}",
            replaces=order.replaces,
        )
        self._orders[order_id] = created
        self._keys[idempotency_key] = (fingerprint, order_id)
        self._record("create", order_id, idempotency_key, "created")
        return created

    def cancel_order(self, order_id: str, *, reason: str, idempotency_key: str) -> Order:
        self._fault("cancel", order_id, idempotency_key)
        if not reason.strip():
            raise Rejected("reason: must be a non-empty string", status=422, code="invalid_request")
        fingerprint = _fingerprint("cancel", order_id, {"reason": reason})
        replay = self._replay(idempotency_key, fingerprint, "cancel", order_id)
        if replay is not None:
            return replay
        order = self._orders.get(order_id)
        if order is None:
            self._record("cancel", order_id, idempotency_key, "not_found")
            raise OrderNotFound(f"no order {order_id!r}")
        self._keys[idempotency_key] = (fingerprint, order_id)
        if order.status == "completed":
            self._record("cancel", order_id, idempotency_key, "completed")
            raise OrderCompleted(f"order {order_id!r} is completed")
        if order.status == "cancelled":
            self._record("cancel", order_id, idempotency_key, "already_cancelled")
            return order
        cancelled = dataclasses.replace(order, status="cancelled")
        self._orders[order_id] = cancelled
        self._record("cancel", order_id, idempotency_key, "cancelled")
        return cancelled

    # -- internals -----------------------------------------------------------------------------------

    def _fault(self, method: str, order_id: str | None, key: str | None) -> None:
        if self._revoked:
            self._record(method, order_id, key, "unauthorized")
            raise Unauthorized("the bearer token was refused")
        if self._faults:
            error = self._faults.pop(0)
            self._record(method, order_id, key, f"fault:{type(error).__name__}")
            raise error

    def _replay(self, key: str, fingerprint: str, method: str, order_id: str | None) -> Order | None:
        seen = self._keys.get(key)
        if seen is None:
            return None
        if seen[0] != fingerprint:
            self._record(method, order_id, key, "key_reused")
            raise Rejected("Idempotency-Key was used with another request", status=422,
                           code="idempotency_key_reused")
        order = self._orders[seen[1]]
        if method == "cancel" and order.status == "completed":
            self._record(method, order_id, key, "completed")
            raise OrderCompleted(f"order {order.id!r} is completed")
        self._record(method, order.id, key, "replayed")
        return order

    def _new_id(self) -> str:
        while f"CC-{self._next_id}" in self._orders:
            self._next_id += 1
        self._next_id += 1
        return f"CC-{self._next_id - 1}"

    def _record(self, method: str, order_id: str | None, key: str | None, outcome: str) -> None:
        self.calls.append(PlatformCall(method, order_id, key, outcome))

    def effects(self, outcome: str) -> Iterable[PlatformCall]:
        """Calls that had the given outcome, e.g. ``"created"`` or ``"cancelled"``."""
        return [c for c in self.calls if c.outcome == outcome]


def _fingerprint(method: str, order_id: str | None, body: Any) -> str:
    return json.dumps([method, order_id, body], sort_keys=True, separators=(",", ":"))
