"""The sandbox's Digistore24 purchases: seeded, paid, missed and stopped the way Digistore24 does it, and read back
in ``getPurchase``'s shape.

``POST /sandbox/digistore24/purchases`` seeds one in this shape (amounts as decimal strings, as Digistore24 writes
them)::

    {"id": "K7ZQ2M4P", "vendor": "acme",
     "product": {"id": "512345", "name": "Coaching Programm"},
     "buyer": {"id": "333222", "email": "anna.meier@example.com", "first_name": "Anna", "last_name": "Meier",
               "country": "DE"},
     "currency": "EUR", "first_amount": "50.00", "other_amounts": "50.00", "number_of_installments": 6,
     "billing_interval": "1_month", "payments": 2, "created_at": "2026-08-01 10:15:02"}

Only ``vendor``, ``product``, ``buyer.email``, ``currency`` and ``first_amount`` are required. The defaults: a new
``id`` and ``buyer.id``; ``other_amounts`` the first amount again; ``number_of_installments`` 1 (a single
payment; 0 is a subscription); ``billing_interval`` ``1_month`` (between every two payments); ``payments`` 1 (the
first payment, made at checkout); ``created_at`` now; ``billing_status`` follows from the payments (``paying``,
or ``completed`` once all are paid; ``reminding``, ``unpaid`` or ``aborted`` may be given for a purchase with
payments left, ``aborted`` meaning its rebilling was stopped); ``custom``, the tracking value its IPNs carry, none.
"""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from domain.money import Money, MoneyError, exponent

SINGLE_PAYMENT, INSTALLMENT, SUBSCRIPTION = "single_payment", "installment", "subscription"
RUNNING = ("paying", "reminding", "unpaid")
STATUSES = (*RUNNING, "completed", "aborted")
STOPPED_BY_API = "by_operator"
_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_INTERVAL = re.compile(r"([0-9]{1,3})_(day|week|month|year)")
_TYPE_TEXT = {SINGLE_PAYMENT: "Single payment", INSTALLMENT: "Installment payment", SUBSCRIPTION: "Subscription"}
_STATUS_TEXT = {"paying": "Paying", "reminding": "Payment reminder", "unpaid": "Unpaid", "completed": "Paid",
                "aborted": "Payments stopped"}


class Refused(Exception):
    """A sandbox control that can't be done; ``status``, ``code`` and ``message`` are its JSON answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class ApiError(Exception):
    """An API call Digistore24 answers with an error envelope: its ``DS_ERR_*`` number and message."""

    BAD_API_KEY, BAD_FUNCTION_PARAMS, NOT_FOUND, BAD_API_CALL = 2, 3, 4, 9

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def timestamp(moment: dt.datetime) -> str:
    """Digistore24's way of writing a time (``2026-08-01 10:15:02``); the sandbox keeps its clock in UTC."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def check_interval(text: str) -> str:
    """A Digistore24 billing interval (``1_month``, ``7_day``), or ValueError."""
    if not _INTERVAL.fullmatch(text) or text.startswith("0"):
        raise ValueError(f"{text!r} is not a billing interval such as 1_month or 7_day")
    return text


def shifted(start: dt.date, interval: str, times: int) -> dt.date:
    """``start`` plus ``times`` intervals, counted from ``start`` so month ends don't drift (31 Jan → 28 Feb)."""
    match = _INTERVAL.fullmatch(interval)
    if match is None:
        raise ValueError(f"not a billing interval: {interval!r}")
    count, unit = int(match[1]) * times, match[2]
    if unit in ("day", "week"):
        return start + dt.timedelta(days=count * (7 if unit == "week" else 1))
    months = start.month - 1 + count * (12 if unit == "year" else 1)
    year, month = start.year + months // 12, months % 12 + 1
    return dt.date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True, slots=True)
class Transaction:
    """One payment: ``number`` is its place in the plan (1 the first), Digistore24's ``pay_sequence_no``."""

    id: int
    number: int
    amount: Money
    created_at: dt.datetime

    def api_data(self, purchase_id: str) -> dict[str, Any]:
        return {"id": self.id, "amount": self.amount.decimal_string(), "currency": self.amount.currency,
                "purchase_id": purchase_id, "pay_method": "creditcard", "pay_method_msg": "Credit card",
                "created_at": timestamp(self.created_at), "type": "payment", "type_msg": "Sale", "invoice_url": ""}


@dataclass(slots=True)
class Purchase:
    """A Digistore24 order of one product: its plan, what was paid, and whether it still charges (rebilling)."""

    id: str
    vendor: str
    product_id: str
    product_name: str
    buyer: dict[str, str]
    currency: str
    first_amount: Money
    other_amounts: Money
    number_of_installments: int
    first_billing_interval: str
    other_billing_intervals: str
    created_at: dt.datetime
    order_item_id: int
    billing_status: str = "paying"
    billing_stop_reason: str = ""
    stopped_at: dt.datetime | None = None
    custom: str = ""
    tracking: dict[str, str] = field(default_factory=dict)
    buy_url: str | None = None
    transactions: list[Transaction] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)

    @property
    def billing_type(self) -> str:
        if self.number_of_installments == 1:
            return SINGLE_PAYMENT
        return SUBSCRIPTION if self.number_of_installments == 0 else INSTALLMENT

    @property
    def paid(self) -> int:
        return len(self.transactions)

    @property
    def rebilling_active(self) -> bool:
        return self.billing_type != SINGLE_PAYMENT and self.billing_status in RUNNING

    def amount_of(self, number: int) -> Money:
        return self.first_amount if number == 1 else self.other_amounts

    def due_date(self, number: int) -> dt.date:
        """When payment ``number`` falls due: the purchase day, then the first interval, then the others."""
        start = self.created_at.date()
        if number <= 1:
            return start
        return shifted(shifted(start, self.first_billing_interval, 1), self.other_billing_intervals, number - 2)

    def next_due(self) -> dt.date | None:
        """The next payment's due date while one is left and the rebilling runs."""
        left = self.number_of_installments == 0 or self.paid < self.number_of_installments
        return self.due_date(self.paid + 1) if left and self.rebilling_active else None

    def record_payment(self, transaction: Transaction) -> None:
        self.transactions.append(transaction)
        done = self.number_of_installments and self.paid >= self.number_of_installments
        self.billing_status = "completed" if done else "paying"

    def stop(self, now: dt.datetime) -> bool:
        """Stop the rebilling at once (``force``); False when it was not running, so nothing changed."""
        if not self.rebilling_active:
            return False
        self.billing_status, self.billing_stop_reason, self.stopped_at = "aborted", STOPPED_BY_API, now
        return True

    def api_data(self) -> dict[str, Any]:
        """``getPurchase``'s ``data``, keys as in Digistore24's documented example; the sandbox charges no VAT."""
        zero = Money.zero(self.currency).decimal_string()
        return {
            "other_amounts": self.other_amounts.decimal_string(), "other_vat_amounts": zero, "id": self.id,
            "amount": self.first_amount.decimal_string(), "currency": self.currency,
            "number_of_installments": self.number_of_installments, "vat_country": self.buyer["country"],
            "vat_amount": zero, "vat_rate": "0.00", "created_at": timestamp(self.created_at),
            "billing_type": self.billing_type, "billing_type_msg": _TYPE_TEXT[self.billing_type],
            "billing_status": self.billing_status, "billing_status_msg": _STATUS_TEXT[self.billing_status],
            "renew_url": "", "receipt_url": "", "invoice_url": "", "has_custom_forms": "N", "has_etickets": "N",
            "transaction_list": [t.api_data(self.id) for t in self.transactions],
            "buyer": {"id": self.buyer["id"], "created_at": timestamp(self.created_at), "email": self.buyer["email"],
                      "first_name": self.buyer["first_name"], "last_name": self.buyer["last_name"],
                      "salutation": "", "title": "", "company": "", "street": "", "street2": "", "zipcode": "",
                      "city": "", "state": "", "country": self.buyer["country"], "phone_no": ""},
            "items": [{"product_name": self.product_name, "product_id": self.product_id, "quantity": 1,
                       "variant_key": "", "variant_name": "", "no": 1, "count": 1, "id": self.order_item_id}],
        }

    def stop_data(self, *, modified: bool) -> dict[str, Any]:
        """``stopRebilling``'s ``data`` for this purchase after the call."""
        stopped = self.billing_status == "aborted"
        note = ("" if self.billing_status == "completed" else
                "The payments were stopped." if modified else
                "The payments are already stopped." if stopped else "There are no payments to stop.")
        due = self.next_due()
        return {"modified": "Y" if modified else "N", "note": note, "code": "stopped_now" if stopped else "",
                "billing_status": self.billing_status, "billing_status_msg": _STATUS_TEXT[self.billing_status],
                "next_payment_at": f"{due.isoformat()} 06:00:00" if due else "",
                "rebilling_active": "Y" if self.rebilling_active else "N",
                "is_cancelled_now": "Y" if stopped else "N", "is_cancelled_later": "N", "can_cancel_before": ""}

    def to_json(self) -> dict[str, Any]:
        """The sandbox's own view, for tests: the seed's fields plus what happened since."""
        return {
            "id": self.id, "vendor": self.vendor, "product": {"id": self.product_id, "name": self.product_name},
            "buyer": dict(self.buyer), "currency": self.currency, "billing_type": self.billing_type,
            "first_amount": self.first_amount.decimal_string(), "other_amounts": self.other_amounts.decimal_string(),
            "number_of_installments": self.number_of_installments,
            "first_billing_interval": self.first_billing_interval,
            "other_billing_intervals": self.other_billing_intervals, "created_at": timestamp(self.created_at),
            "payments": self.paid, "missed_payments": list(self.missed), "billing_status": self.billing_status,
            "rebilling_active": self.rebilling_active, "billing_stop_reason": self.billing_stop_reason,
            "custom": self.custom, "tracking": dict(self.tracking), "buy_url": self.buy_url,
            "transactions": [{"id": t.id, "pay_sequence_no": t.number, "amount": t.amount.decimal_string(),
                              "created_at": timestamp(t.created_at)} for t in self.transactions],
        }


class Purchases:
    """Every purchase the sandbox knows. Ids and transaction ids survive a reset, as the order ids do."""

    def __init__(self) -> None:
        self._purchase_numbers = itertools.count(100001)
        self._transaction_numbers = itertools.count(4000001)
        self._buyer_numbers = itertools.count(700001)
        self._item_numbers = itertools.count(33000001)
        self.by_id: dict[str, Purchase] = {}

    def reset(self) -> None:
        self.by_id = {}

    def new_id(self) -> str:
        while (purchase_id := f"DS{next(self._purchase_numbers)}") in self.by_id:
            pass
        return purchase_id

    def new_buyer_id(self) -> str:
        return str(next(self._buyer_numbers))

    def new_item_id(self) -> int:
        return next(self._item_numbers)

    def of_vendor(self, vendor: str, purchase_id: str) -> Purchase | None:
        """A purchase as one vendor's API key sees it: another vendor's purchase does not exist for it."""
        purchase = self.by_id.get(purchase_id)
        return purchase if purchase is not None and purchase.vendor == vendor else None

    def product(self, vendor: str, product_id: str) -> Purchase | None:
        """The vendor's latest purchase of ``product_id``: the sandbox knows a product by its purchases."""
        found = [p for p in self.by_id.values() if p.vendor == vendor and p.product_id == product_id]
        return found[-1] if found else None

    def pay(self, purchase: Purchase, number: int, now: dt.datetime) -> Transaction:
        transaction = Transaction(next(self._transaction_numbers), number, purchase.amount_of(number), now)
        purchase.record_payment(transaction)
        return transaction

    def seed(self, body: Any, *, now: dt.datetime) -> Purchase:
        """Store a purchase in the seed shape (module docstring); refuse a body that is not one."""
        if not isinstance(body, dict):
            raise Refused(422, "invalid_purchase", "body: must be a JSON object")
        purchase = _seeded(body, self, now)
        if purchase.id in self.by_id:
            raise Refused(409, "purchase_exists", f"purchase {purchase.id!r} already exists")
        self.by_id[purchase.id] = purchase
        return purchase

    def set_payment(self, purchase: Purchase, number: int, action: str, now: dt.datetime) -> Transaction | None:
        """``missed`` or ``paid`` for payment ``number``; the transaction a payment made, None for a miss."""
        purchase_id = purchase.id
        count = purchase.number_of_installments
        if number < 1 or (count and number > count):
            raise Refused(404, "payment_not_found", f"purchase {purchase_id!r} has no payment {number}")
        if action == "missed":
            if purchase.billing_type == SINGLE_PAYMENT:
                raise Refused(409, "single_payment", "a single payment has no later payment to miss")
            purchase.missed.append(number)
            if purchase.rebilling_active:
                purchase.billing_status = "reminding"
            return None
        if number != purchase.paid + 1:
            raise Refused(409, "not_next_payment", f"purchase {purchase_id!r} has {purchase.paid} payments: "
                                                   f"the next is {purchase.paid + 1}")
        if not purchase.rebilling_active and purchase.paid:
            raise Refused(409, "rebilling_stopped", f"purchase {purchase_id!r} is {purchase.billing_status}: "
                                                    "Digistore24 charges nothing more")
        return self.pay(purchase, number, now)


def _seeded(body: dict[str, Any], purchases: Purchases, now: dt.datetime) -> Purchase:
    product, buyer = _object(body, "product"), _object(body, "buyer")
    currency = _currency(_text(body, "currency"))
    count = _whole(body, "number_of_installments", 1)
    first = _money(body, "first_amount", currency)
    other = _money(body, "other_amounts", currency) if body.get("other_amounts") is not None else (
        first if count != 1 else Money.zero(currency))
    interval = "" if count == 1 else _interval(body.get("billing_interval", "1_month"))
    purchase_id = body.get("id") or purchases.new_id()
    if not isinstance(purchase_id, str) or not _ID.fullmatch(purchase_id):
        raise Refused(422, "invalid_purchase", "id: letters, digits, _ and - only, at most 32")
    created = _created_at(body.get("created_at"), now)
    purchase = Purchase(
        id=purchase_id, vendor=_text(body, "vendor"), product_id=_text(product, "id", "product."),
        product_name=_text(product, "name", "product."), currency=currency, first_amount=first, other_amounts=other,
        buyer={"id": str(buyer.get("id") or purchases.new_buyer_id()), "email": _text(buyer, "email", "buyer."),
               "first_name": _optional(buyer, "first_name"), "last_name": _optional(buyer, "last_name"),
               "country": _optional(buyer, "country") or "DE"},
        number_of_installments=count, first_billing_interval=interval, other_billing_intervals=interval,
        created_at=created, order_item_id=purchases.new_item_id(), custom=_optional(body, "custom"))
    payments = _whole(body, "payments", 1)
    if count and payments > count:
        raise Refused(422, "invalid_purchase", f"payments: {payments} made of {count}")
    for number in range(1, payments + 1):
        purchases.pay(purchase, number, dt.datetime.combine(purchase.due_date(number), created.timetz()))
    _apply_status(purchase, body.get("billing_status"), now)
    return purchase


def _apply_status(purchase: Purchase, status: Any, now: dt.datetime) -> None:
    if status is None or status == purchase.billing_status:
        return
    if status not in STATUSES or "completed" in (status, purchase.billing_status):
        raise Refused(422, "invalid_purchase", f"billing_status: {status!r} does not fit {purchase.paid} payments "
                                               f"of {purchase.number_of_installments}")
    purchase.billing_status = status
    if status == "aborted":
        purchase.billing_stop_reason, purchase.stopped_at = STOPPED_BY_API, now


def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if not isinstance(value, dict):
        raise Refused(422, "invalid_purchase", f"{key}: must be an object")
    return value


def _text(body: dict[str, Any], key: str, prefix: str = "") -> str:
    value = body.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise Refused(422, "invalid_purchase", f"{prefix}{key}: must be a non-empty string")
    return value


def _optional(body: dict[str, Any], key: str) -> str:
    return _text(body, key) if body.get(key) not in (None, "") else ""


def _whole(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1000:
        raise Refused(422, "invalid_purchase", f"{key}: must be a whole number from 0 to 1000")
    return value


def _money(body: dict[str, Any], key: str, currency: str) -> Money:
    try:
        amount = Money.parse(body.get(key), currency)
    except MoneyError as exc:
        raise Refused(422, "invalid_purchase", f"{key}: {exc}") from None
    if not amount.is_positive:
        raise Refused(422, "invalid_purchase", f"{key}: must be more than zero")
    return amount


def _currency(code: str) -> str:
    try:
        exponent(code)
    except MoneyError as exc:
        raise Refused(422, "invalid_purchase", f"currency: {exc}") from None
    return code


def _interval(value: Any) -> str:
    try:
        return check_interval(value if isinstance(value, str) else repr(value))
    except ValueError as exc:
        raise Refused(422, "invalid_purchase", f"billing_interval: {exc}") from None


def _created_at(value: Any, now: dt.datetime) -> dt.datetime:
    if value is None:
        return now
    try:
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise Refused(422, "invalid_purchase", "created_at: must be a time such as 2026-08-01 10:15:02")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
