"""CopeCart's IPN fields read into the payment events dunlink acts on (``domain.events``).

Parsing is strict where dunlink relies on a field and lenient elsewhere: CopeCart adds fields over time,
and an event that dunlink does not act on is still stored and answered ``OK``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from domain.events import (
    ACTED_ON,
    BREAKDOWN,
    CHARGED_BACK,
    FAILED,
    MADE,
    MAX_AMOUNT_TEXT,
    MAX_EVENT_TYPE,
    MAX_ORDER_ID,
    RECURRING_CANCELLED,
    REFUNDED,
    IpnFieldError,
    PaymentEvent,
    dedup_key,
)
from domain.money import Money, MoneyError, exponent

__all__ = ["ACTED_ON", "BREAKDOWN", "CHARGED_BACK", "FAILED", "MADE", "MAX_AMOUNT_TEXT", "MAX_EVENT_TYPE",
           "MAX_ORDER_ID", "RECURRING_CANCELLED", "REFUNDED", "IpnFieldError", "PaymentEvent", "dedup_key",
           "normalise_event_type", "parse_event"]

_ALIASES = {"payment.charge_back": CHARGED_BACK}
_WHOLE_NUMBER = re.compile(r"[0-9]{1,4}")
# Fields that must be strings when present; anything else is a malformed delivery.
_TEXT_FIELDS = ("order_id", "transaction_id", "payment_plan", "transaction_currency", "product_id", "product_name",
                "buyer_email", "buyer_firstname", "buyer_lastname", "buyer_country_code", "frequency")


def normalise_event_type(value: str) -> str:
    return _ALIASES.get(value, value)


def parse_event(fields: Mapping[str, Any]) -> PaymentEvent:
    """Read the fields dunlink relies on; raise :class:`IpnFieldError` naming the first bad one."""
    event_type = _identifier(fields, "event_type", max_length=MAX_EVENT_TYPE)
    order_id = _identifier(fields, "order_id", max_length=MAX_ORDER_ID)
    for name in _TEXT_FIELDS:
        value = fields.get(name)
        if value is not None and not isinstance(value, str):
            raise IpnFieldError(name, "must be a string")
    if isinstance(fields.get("transaction_id"), str) and not _printable(fields["transaction_id"]):
        raise IpnFieldError("transaction_id", "must be printable text")
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
            exponent(currency)
        except MoneyError as exc:
            raise IpnFieldError("transaction_currency", str(exc)) from None
        text_amount = fields.get("transaction_amount")
        if isinstance(text_amount, str) and len(text_amount) > MAX_AMOUNT_TEXT:
            raise IpnFieldError("transaction_amount", f"longer than {MAX_AMOUNT_TEXT} characters")
        try:
            amount = Money.parse(text_amount, currency)
        except MoneyError as exc:
            raise IpnFieldError("transaction_amount", str(exc)) from None
    return PaymentEvent(event_type, order_id, fields.get("transaction_id"), plan, rate, amount,
                        fields.get("buyer_email"), fields.get("product_id"))


def _rate_number(value: Any, *, required: bool) -> int | None:
    if value is None:
        if required:
            raise IpnFieldError("rate_number", "required for installment plans")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise IpnFieldError("rate_number", "must be a whole number")
    if isinstance(value, int):
        number = value
    elif _WHOLE_NUMBER.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise IpnFieldError("rate_number", "must be a whole number from 1")
    if not 1 <= number <= 1000:
        raise IpnFieldError("rate_number", "must be a whole number from 1")
    return number


def _identifier(fields: Mapping[str, Any], name: str, *, max_length: int) -> str:
    """A required identifier that is stored in its own column: printable text of bounded length."""
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise IpnFieldError(name, "required, a string")
    if len(value) > max_length:
        raise IpnFieldError(name, f"longer than {max_length} characters")
    if not _printable(value):
        raise IpnFieldError(name, "must be printable text")
    return value


def _printable(value: str) -> bool:
    # NUL cannot be stored in PostgreSQL text and a lone surrogate cannot be encoded for any database.
    # isprintable() is false for every Cc and Cs character (and some others): true answers at C speed.
    return value.isprintable() or not any(unicodedata.category(c) in ("Cc", "Cs") for c in value)
