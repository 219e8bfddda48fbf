"""The platform's order API as the pipeline sees it: three calls and the order they talk about.

Orders cross this boundary as frozen dataclasses whose money is integer minor units; the JSON shape is the
one in the contract ("Outbound: the platform's order API"). Parsing is strict so that a platform changing
its answers shows up as :class:`MalformedResponse` at the boundary, not as a wrong amount in an email.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from adapters.platform.errors import (
    MalformedResponse,
    OrderCompleted,
    OrderNotFound,
    PermanentPlatformError,
    PlatformError,
    PlatformTimeout,
    PlatformUnavailable,
    RateLimited,
    Rejected,
    TransientPlatformError,
    Unauthorized,
)

__all__ = [
    "INSTALLMENT_STATUSES", "ORDER_STATUSES", "PLAN_KINDS", "Buyer", "InvalidShape", "MalformedResponse",
    "NewOrder", "Order", "OrderCompleted", "OrderNotFound", "PermanentPlatformError", "Plan",
    "PlanInstallment", "PlatformError", "PlatformPort", "PlatformTimeout", "PlatformUnavailable",
    "RateLimited", "Rejected", "TransientPlatformError", "Unauthorized",
]

ORDER_STATUSES = ("active", "cancelled", "completed")
INSTALLMENT_STATUSES = ("open", "paid", "failed", "refunded", "charged_back", "void")
PLAN_KINDS = ("installments", "one_time")


class InvalidShape(ValueError):
    """A JSON document does not have the contract's shape; ``field`` is the dotted path of the culprit.

    Both sides use it: the client turns it into :class:`MalformedResponse`, the sandbox into a 422 that
    names the field.
    """

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}")
        self.field = field_path
        self.problem = problem


def _get(data: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in data:
        raise InvalidShape(f"{path}{key}", "missing")
    return data[key]


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidShape(path or "body", "must be an object")
    return value


def _text(data: Mapping[str, Any], key: str, path: str, *, nullable: bool = False) -> Any:
    value = _get(data, key, path)
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidShape(f"{path}{key}", "must be a non-empty string")
    return value


def _choice(data: Mapping[str, Any], key: str, path: str, choices: tuple[str, ...]) -> str:
    value: str = _text(data, key, path)
    if value not in choices:
        raise InvalidShape(f"{path}{key}", f"must be one of {', '.join(choices)}")
    return value


@dataclass(frozen=True, slots=True)
class Buyer:
    id: str
    email: str
    first_name: str
    last_name: str
    country_code: str

    @classmethod
    def parse(cls, value: Any, path: str = "buyer") -> Buyer:
        data = _obj(value, path)
        p = f"{path}."
        email: str = _text(data, "email", p)
        if "@" not in email:
            raise InvalidShape(f"{p}email", "must be an email address")
        country: str = _text(data, "country_code", p)
        if len(country) != 2 or not country.isalpha() or not country.isupper():
            raise InvalidShape(f"{p}country_code", "must be an ISO 3166 alpha-2 code such as DE")
        return cls(id=_text(data, "id", p), email=email, first_name=_text(data, "first_name", p),
                   last_name=_text(data, "last_name", p), country_code=country)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "first_name": self.first_name,
                "last_name": self.last_name, "country_code": self.country_code}


@dataclass(frozen=True, slots=True)
class PlanInstallment:
    number: int
    amount: int
    due_date: dt.date
    status: str

    @classmethod
    def parse(cls, value: Any, path: str) -> PlanInstallment:
        data = _obj(value, path)
        p = f"{path}."
        number, amount = _get(data, "number", p), _get(data, "amount", p)
        for key, item in (("number", number), ("amount", amount)):
            if not isinstance(item, int) or isinstance(item, bool):
                raise InvalidShape(f"{p}{key}", "must be an integer")
        if number < 1:
            raise InvalidShape(f"{p}number", "must be 1 or more")
        if amount < 0:
            raise InvalidShape(f"{p}amount", "must not be negative (minor units)")
        due: str = _text(data, "due_date", p)
        try:
            due_date = dt.date.fromisoformat(due)
        except ValueError:
            raise InvalidShape(f"{p}due_date", "must be a date such as 2026-09-01") from None
        return cls(number=number, amount=amount, due_date=due_date,
                   status=_choice(data, "status", p, INSTALLMENT_STATUSES))

    def to_json(self) -> dict[str, Any]:
        return {"number": self.number, "amount": self.amount, "due_date": self.due_date.isoformat(),
                "status": self.status}


@dataclass(frozen=True, slots=True)
class Plan:
    kind: str
    frequency: str | None
    installments: tuple[PlanInstallment, ...]

    @classmethod
    def parse(cls, value: Any, path: str = "plan") -> Plan:
        data = _obj(value, path)
        p = f"{path}."
        kind = _choice(data, "kind", p, PLAN_KINDS)
        frequency: str | None = _text(data, "frequency", p, nullable=True)
        raw = _get(data, "installments", p)
        if not isinstance(raw, list) or not raw:
            raise InvalidShape(f"{p}installments", "must be a non-empty list")
        installments = tuple(PlanInstallment.parse(item, f"{p}installments[{i}]") for i, item in enumerate(raw))
        if [i.number for i in installments] != list(range(1, len(installments) + 1)):
            raise InvalidShape(f"{p}installments", "numbers must run 1, 2, 3, ... in order")
        if kind == "one_time" and len(installments) != 1:
            raise InvalidShape(f"{p}installments", "a one_time plan has exactly one installment")
        return cls(kind=kind, frequency=frequency, installments=installments)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "frequency": self.frequency,
                "installments": [i.to_json() for i in self.installments]}


def _currency(data: Mapping[str, Any]) -> str:
    value: str = _text(data, "currency", "")
    if len(value) != 3 or not value.isalpha() or not value.isupper():
        raise InvalidShape("currency", "must be an ISO 4217 code such as EUR")
    return value


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    vendor: str
    status: str
    product_id: str
    product_name: str
    buyer: Buyer
    currency: str
    plan: Plan
    payment_url: str | None
    replaces: str | None

    @classmethod
    def parse(cls, value: Any) -> Order:
        """Parse an order document; raise :class:`InvalidShape` naming the first bad field."""
        data = _obj(value, "")
        product = _obj(_get(data, "product", ""), "product")
        return cls(
            id=_text(data, "id", ""), vendor=_text(data, "vendor", ""),
            status=_choice(data, "status", "", ORDER_STATUSES),
            product_id=_text(product, "id", "product."), product_name=_text(product, "name", "product."),
            buyer=Buyer.parse(_get(data, "buyer", "")), currency=_currency(data),
            plan=Plan.parse(_get(data, "plan", "")),
            payment_url=_text(data, "payment_url", "", nullable=True) if "payment_url" in data else None,
            replaces=_text(data, "replaces", "", nullable=True) if "replaces" in data else None,
        )

    @classmethod
    def from_json(cls, value: Any) -> Order:
        """Parse an order the platform answered; a bad shape is the platform's fault."""
        try:
            return cls.parse(value)
        except InvalidShape as exc:
            raise MalformedResponse(f"order: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "vendor": self.vendor, "status": self.status,
                "product": {"id": self.product_id, "name": self.product_name},
                "buyer": self.buyer.to_json(), "currency": self.currency, "plan": self.plan.to_json(),
                "payment_url": self.payment_url, "replaces": self.replaces}


@dataclass(frozen=True, slots=True)
class NewOrder:
    """What the pipeline asks the platform to create: usually a replacement for what is still owed.

    The contract's body names only ``product_id``; the platform (and the sandbox) takes the product's name
    from its catalogue, which the sandbox models as "the name on the replaced order".
    """

    vendor: str
    product_id: str
    buyer: Buyer
    currency: str
    plan: Plan
    replaces: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: Any) -> NewOrder:
        """Parse a POST /v1/orders body; raise :class:`InvalidShape` naming the first bad field."""
        data = _obj(value, "")
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            raise InvalidShape("metadata", "must be an object of strings")
        return cls(vendor=_text(data, "vendor", ""), product_id=_text(data, "product_id", ""),
                   buyer=Buyer.parse(_get(data, "buyer", "")), currency=_currency(data),
                   plan=Plan.parse(_get(data, "plan", "")),
                   replaces=_text(data, "replaces", "", nullable=True) if "replaces" in data else None,
                   metadata=dict(metadata))

    def to_json(self) -> dict[str, Any]:
        return {"vendor": self.vendor, "product_id": self.product_id, "buyer": self.buyer.to_json(),
                "currency": self.currency, "plan": self.plan.to_json(), "replaces": self.replaces,
                "metadata": dict(self.metadata)}


class PlatformPort(Protocol):
    """The three calls dunning needs from a checkout platform.

    Writes take an idempotency key that the caller derives from the case and the step, so a step retried
    after a crash or a timeout can never make a second order or a second cancellation. Every method raises
    only :class:`PlatformError` subclasses.
    """

    def get_order(self, order_id: str) -> Order:
        """The order as the platform sees it now (to check status before acting)."""
        ...

    def create_order(self, order: NewOrder, *, idempotency_key: str) -> Order:
        """Create an order (with its ``payment_url``); the same key with the same order returns it again."""
        ...

    def cancel_order(self, order_id: str, *, reason: str, idempotency_key: str) -> Order:
        """Cancel so the buyer can't pay twice; already cancelled is success, completed raises
        :class:`OrderCompleted`."""
        ...
