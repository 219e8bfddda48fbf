"""A Digistore24 purchase as ``getPurchase`` answers it, and as the order the pipeline already knows.

``getPurchase`` describes the plan by ``billing_type``, ``amount`` (the first payment), ``other_amounts``,
``number_of_installments`` and ``transaction_list``; it documents no billing interval, so the interval comes
from the IPN (``other_billing_intervals``) when the purchase is turned into an :class:`Order`. Anything the
answer leaves ambiguous (several order items, refunds whose installment is not named, a subscription with no
end) is refused with :class:`UnsupportedPurchase`, for a person to look at, rather than guessed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from adapters.platform.errors import MalformedResponse, PermanentPlatformError
from adapters.platform.port import Buyer, InvalidShape, Order, Plan, PlanInstallment
from domain.money import Money, MoneyError
from domain.plans import Frequency, advance

SINGLE_PAYMENT, INSTALLMENT, SUBSCRIPTION = "single_payment", "installment", "subscription"
BILLING_TYPES = (SINGLE_PAYMENT, INSTALLMENT, SUBSCRIPTION)
# Digistore24's billing status in the order statuses of the port: still collecting, everything paid, stopped.
ORDER_STATUS = {"paying": "active", "reminding": "active", "unpaid": "active", "completed": "completed",
                "aborted": "cancelled"}
PAYMENT = "payment"


class UnsupportedPurchase(PermanentPlatformError):
    """A purchase dunlink cannot turn into a plan without guessing; a person decides what is owed."""


@dataclass(frozen=True, slots=True)
class Transaction:
    id: str
    kind: str
    amount: Money
    created_at: str


@dataclass(frozen=True, slots=True)
class Purchase:
    id: str
    billing_type: str
    billing_status: str
    currency: str
    first_amount: Money
    other_amounts: Money
    number_of_installments: int
    created_on: dt.date
    buyer: Buyer
    product_id: str
    product_name: str
    transactions: tuple[Transaction, ...]

    @property
    def order_status(self) -> str:
        return ORDER_STATUS[self.billing_status]

    @classmethod
    def from_api(cls, data: Any, purchase_id: str) -> Purchase:
        """Parse ``getPurchase``'s ``data``; a shape other than the documented one is :class:`MalformedResponse`.

        For several ids Digistore24 answers an object keyed by id; dunlink asks for one and accepts either form.
        """
        try:
            purchase = cls._parse(_single(data, purchase_id))
        except InvalidShape as exc:
            raise MalformedResponse(f"getPurchase {purchase_id}: {exc}") from None
        if purchase.id != purchase_id:
            raise MalformedResponse(f"getPurchase {purchase_id}: answered purchase {purchase.id}")
        return purchase

    @classmethod
    def _parse(cls, data: Mapping[str, Any]) -> Purchase:
        currency = _text(data, "currency")
        billing_type = _choice(data, "billing_type", BILLING_TYPES)
        transactions = data.get("transaction_list") or []
        if not isinstance(transactions, list):
            raise InvalidShape("transaction_list", "must be a list")
        return cls(
            id=_text(data, "id"), billing_type=billing_type,
            billing_status=_choice(data, "billing_status", tuple(ORDER_STATUS)), currency=currency,
            first_amount=_money(data.get("amount"), currency, "amount"),
            other_amounts=_money(data.get("other_amounts", "0"), currency, "other_amounts"),
            number_of_installments=_count(data.get("number_of_installments", 0), "number_of_installments"),
            created_on=_date(data.get("created_at"), "created_at"),
            buyer=_buyer(data.get("buyer")), **_product(data.get("items")),
            transactions=tuple(_transaction(item, currency, f"transaction_list[{i}]")
                               for i, item in enumerate(transactions)),
        )

    def to_order(self, *, vendor: str, frequency: Frequency | None) -> Order:
        """The purchase as the port's :class:`Order`: installments paid in order, the rest open.

        ``frequency`` is the purchase's billing interval as the IPN gave it (``getPurchase`` has none).
        """
        if self.billing_type == SUBSCRIPTION:
            raise UnsupportedPurchase(f"purchase {self.id} is a subscription: it has no end, so nothing is owed")
        not_payments = sorted({t.kind for t in self.transactions if t.kind != PAYMENT})
        if not_payments:
            raise UnsupportedPurchase(f"purchase {self.id} has {', '.join(not_payments)} transactions; getPurchase "
                                      "does not say which installment they reverse")
        count = max(self.number_of_installments, 1) if self.billing_type == INSTALLMENT else 1
        paid = len(self.transactions)
        if paid > count:
            raise MalformedResponse(f"getPurchase {self.id}: {paid} payments for {count} installments")
        if count > 1 and frequency is None:
            raise UnsupportedPurchase(f"purchase {self.id}: an installment plan needs its billing interval")
        installments = tuple(
            PlanInstallment(number=n, amount=(self.first_amount if n == 1 else self.other_amounts).minor,
                            due_date=advance(self.created_on, frequency, n - 1) if frequency else self.created_on,
                            status="paid" if n <= paid else "open")
            for n in range(1, count + 1))
        plan = Plan(kind="installments" if count > 1 else "one_time",
                    frequency=frequency.value if count > 1 and frequency else None, installments=installments)
        return Order(id=self.id, vendor=vendor, status=self.order_status, product_id=self.product_id,
                     product_name=self.product_name, buyer=self.buyer, currency=self.currency, plan=plan,
                     payment_url=None, replaces=None)


def _single(data: Any, purchase_id: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise InvalidShape("data", "must be an object")
    if "id" not in data and isinstance(data.get(purchase_id), Mapping):
        return data[purchase_id]  # type: ignore[no-any-return]
    return data


def _product(items: Any) -> dict[str, str]:
    if not isinstance(items, list) or not items:
        raise InvalidShape("items", "must be a non-empty list")
    if len(items) > 1:
        raise UnsupportedPurchase(f"the purchase has {len(items)} order items; dunlink continues one-product plans")
    item = items[0]
    if not isinstance(item, Mapping):
        raise InvalidShape("items[0]", "must be an object")
    return {"product_id": _text(item, "product_id", "items[0]."), "product_name": _text(item, "product_name",
                                                                                         "items[0].")}


def _buyer(value: Any) -> Buyer:
    if not isinstance(value, Mapping):
        raise InvalidShape("buyer", "must be an object")
    return Buyer.parse({"id": _text(value, "id", "buyer."), "email": value.get("email"),
                        "first_name": value.get("first_name"), "last_name": value.get("last_name"),
                        "country_code": value.get("country")})


def _transaction(value: Any, currency: str, path: str) -> Transaction:
    if not isinstance(value, Mapping):
        raise InvalidShape(path, "must be an object")
    return Transaction(id=_text(value, "id", f"{path}."), kind=_text(value, "type", f"{path}."),
                       amount=_money(value.get("amount"), str(value.get("currency") or currency), f"{path}.amount"),
                       created_at=str(value.get("created_at") or ""))


def _text(data: Mapping[str, Any], key: str, prefix: str = "") -> str:
    """A non-empty string; Digistore24 writes numeric ids as JSON numbers, which are read as their digits."""
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidShape(f"{prefix}{key}", "must be a non-empty string")
    return value


def _choice(data: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = _text(data, key)
    if value not in choices:
        raise InvalidShape(key, f"must be one of {', '.join(choices)}")
    return value


def _money(value: Any, currency: str, path: str) -> Money:
    """An amount given as a string, an integer or a JSON number read as :class:`Decimal`, never a float."""
    if isinstance(value, Decimal):
        value = format(value, "f")
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    try:
        return Money.parse(value, currency)
    except MoneyError as exc:
        raise InvalidShape(path, str(exc)) from None


def _count(value: Any, path: str) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
        raise InvalidShape(path, "must be a whole number")
    return value


def _date(value: Any, path: str) -> dt.date:
    """The day of a Digistore24 time stamp (``2014-02-25 22:51:09`` in its examples, ISO 8601 in its schema)."""
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        raise InvalidShape(path, "must be a date and time such as 2026-08-01 10:15:02") from None
