"""CopeCart IPN fields read into the payment events dunlink acts on.

Parsing is strict where dunlink relies on a field and lenient elsewhere: CopeCart adds fields over time,
and an event that dunlink does not act on is still stored and answered ``OK``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.money import Money, MoneyError

FAILED = "payment.failed"
MADE = "payment.made"
REFUNDED = "payment.refunded"
CHARGED_BACK = "payment.charged_back"
RECURRING_CANCELLED = "payment.recurring.cancelled"
_ALIASES = {"payment.charge_back": CHARGED_BACK}
ACTED_ON = frozenset({FAILED, MADE, REFUNDED, CHARGED_BACK, RECURRING_CANCELLED})
BREAKDOWN = "breakdown_payment"

# Fields that must be strings when present; anything else is a malformed delivery.
_TEXT_FIELDS = ("order_id", "transaction_id", "payment_plan", "transaction_currency", "product_id", "product_name",
                "buyer_email", "buyer_firstname", "buyer_lastname", "buyer_country_code", "frequency")


class IpnFieldError(ValueError):
    """A field the event needs is missing or of the wrong type; ``field`` names it for the sender."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    event_type: str
    order_id: str
    transaction_id: str | None
    payment_plan: str | None
    rate_number: int | None
    amount: Money | None

    @property
    def acted_on(self) -> bool:
        return self.event_type in ACTED_ON

    @property
    def starts_dunning(self) -> bool:
        return self.event_type == FAILED and self.payment_plan == BREAKDOWN


def normalise_event_type(value: str) -> str:
    return _ALIASES.get(value, value)


def dedup_key(fields: Mapping[str, Any], raw_body: bytes) -> str:
    """``transaction_id`` where CopeCart sends one, else the SHA-256 of the exact body."""
    transaction = fields.get("transaction_id")
    if isinstance(transaction, str) and transaction:
        return transaction[:128]
    return "sha256:" + hashlib.sha256(raw_body).hexdigest()


def parse_event(fields: Mapping[str, Any]) -> PaymentEvent:
    """Read the fields dunlink relies on; raise :class:`IpnFieldError` naming the first bad one."""
    event_type = fields.get("event_type")
    if not isinstance(event_type, str) or not event_type:
        raise IpnFieldError("event_type", "required, a string")
    order_id = fields.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise IpnFieldError("order_id", "required, a string")
    if len(order_id) > 128:
        raise IpnFieldError("order_id", "longer than 128 characters")
    for name in _TEXT_FIELDS:
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            raise IpnFieldError(name, "must be a string")
    event_type = normalise_event_type(event_type)
    if event_type not in ACTED_ON:
        return PaymentEvent(event_type, order_id, fields.get("transaction_id"), fields.get("payment_plan"), None, None)

    plan = fields.get("payment_plan")
    if not isinstance(plan, str) or not plan:
        raise IpnFieldError("payment_plan", "required, a string")
    rate = _rate_number(fields.get("rate_number"), required=plan == BREAKDOWN)
    amount = None
    if event_type != RECURRING_CANCELLED:
        currency = fields.get("transaction_currency")
        if not isinstance(currency, str) or not currency:
            raise IpnFieldError("transaction_currency", "required, an ISO 4217 code")
        try:
            amount = Money.parse(fields.get("transaction_amount"), currency)
        except MoneyError as exc:
            field = "transaction_currency" if "currency" in str(exc) else "transaction_amount"
            raise IpnFieldError(field, str(exc)) from None
    return PaymentEvent(event_type, order_id, fields.get("transaction_id"), plan, rate, amount)


def _rate_number(value: Any, *, required: bool) -> int | None:
    if value is None:
        if required:
            raise IpnFieldError("rate_number", "required for installment plans")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise IpnFieldError("rate_number", "must be a whole number")
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1 or int(text) > 1000:
        raise IpnFieldError("rate_number", "must be a whole number from 1")
    return int(text)
