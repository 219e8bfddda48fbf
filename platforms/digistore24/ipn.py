"""Digistore24's IPN, read into the payment events dunlink acts on.

Digistore24 posts each notification form-encoded and signed (``signature.py``); verify first, then parse.
The event names become the domain's, so the use cases do not know which platform spoke:

    on_payment           payment.made
    on_payment_missed    payment.failed, but only when a payment failed (see ``billing_stop_reason``)
    on_refund            payment.refunded
    on_chargeback        payment.charged_back
    on_rebill_cancelled  payment.recurring.cancelled
    connection_test      ConnectionTest: answered OK, never stored
    anything else        kept under Digistore24's own name, stored, acted on by nobody

Digistore24 also sends ``on_payment_missed`` when the rebilling was stopped on purpose (by the buyer, the
vendor, dunlink itself, a refund or a charge-back); ``billing_stop_reason`` then says so, and such an event
keeps Digistore24's name: dunning a buyer who cancelled, or whom dunlink already took over, would be wrong.
Field meanings and their sources are in docs/platforms/digistore24.md.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

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

__all__ = ["CONNECTION_TEST", "ConnectionTest", "DigistoreIpn", "dedup_key", "parse_ipn", "read_form"]

CONNECTION_TEST = "connection_test"
MISSED = "on_payment_missed"
EVENTS = {
    "on_payment": MADE,
    MISSED: FAILED,
    "on_refund": REFUNDED,
    "on_chargeback": CHARGED_BACK,
    "on_rebill_cancelled": RECURRING_CANCELLED,
}
INSTALLMENT = "installment"
# ``billing_stop_reason`` on a missed payment: empty while the rebilling runs (the charge failed and Digistore24
# keeps trying), or the reason it stopped. Only these mean "the buyer's payment did not go through".
PAYMENT_FAILURES = frozenset({"", "by_payment_denial", "pay_alias_invalid"})
MAX_FIELDS = 1000
# A field name PHP would rename or nest on arrival can't be one Digistore24 signs as it arrives.
_PHP_MANGLED = re.compile(r"[.\[\] ]")
_WHOLE_NUMBER = re.compile(r"[0-9]{1,4}")


@dataclass(frozen=True, slots=True)
class ConnectionTest:
    """Digistore24 testing the IPN URL (the vendor pressed "test connection"): answer ``OK``, store nothing."""

    merchant_id: str | None


@dataclass(frozen=True, slots=True)
class DigistoreIpn:
    """One order event: the domain's :class:`PaymentEvent` plus the Digistore24 facts a case needs.

    ``event.order_id`` is Digistore24's order id, which its API calls ``purchase_id``; ``event.rate_number`` is
    ``pay_sequence_no`` (read for the events dunlink acts on). ``tracking`` is ``custom``, the value a buy URL's
    ``tracking[custom]`` carried: on the buyer's payment through dunlink's link it is the case id. The plan as
    the IPN states it (``number_of_installments``, ``first_amount``, ``other_amounts``) is read for a missed
    installment only: nothing else relies on it, and parsing is strict only where dunlink relies on a field.
    """

    event: PaymentEvent
    digistore_event: str
    billing_type: str | None
    billing_stop_reason: str | None
    tracking: str | None
    buyer_email: str | None
    product_id: str | None
    product_name: str | None
    number_of_installments: int | None
    first_amount: Money | None
    other_amounts: Money | None
    billing_interval: str | None


def read_form(body: bytes) -> dict[str, str]:
    """The fields of a form-encoded body, exactly as Digistore24 signed them; a malformed body names the culprit.

    Stricter than PHP's ``$_POST`` where PHP would guess: a name sent twice, a name PHP would rewrite
    (``a.b``, ``a[b]``), bytes that are not UTF-8 are refused rather than signed differently from the sender.
    """
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, encoding="utf-8", errors="strict",
                          max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise IpnFieldError("body", "must be UTF-8") from None
    except ValueError as exc:
        problem = f"more than {MAX_FIELDS} fields" if "Max number" in str(exc) else "not a form-encoded body"
        raise IpnFieldError("body", problem) from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        if not name or _PHP_MANGLED.search(name) or not _printable(name):
            raise IpnFieldError(name[:64] or "body", "not a Digistore24 field name")
        if name in fields:
            raise IpnFieldError(name, "sent more than once")
        fields[name] = value
    return fields


def parse_ipn(fields: Mapping[str, Any]) -> DigistoreIpn | ConnectionTest:
    """Read a verified IPN; raise :class:`IpnFieldError` naming the first field dunlink can't rely on."""
    name = _identifier(fields, "event", max_length=MAX_EVENT_TYPE)
    if name == CONNECTION_TEST:
        return ConnectionTest(_text(fields, "merchant_id"))
    billing_type = _text(fields, "billing_type")
    stop_reason = _text(fields, "billing_stop_reason")
    if name in ACTED_ON:
        raise IpnFieldError("event", "not a Digistore24 event name")
    event_type = EVENTS.get(name, name)
    if name == MISSED and (stop_reason or "") not in PAYMENT_FAILURES:
        event_type = MISSED
    acted_on = event_type in ACTED_ON
    order_id = _identifier(fields, "order_id", max_length=MAX_ORDER_ID) if acted_on else _order_id_if_any(fields)
    plan = BREAKDOWN if billing_type == INSTALLMENT else billing_type
    dunning = event_type == FAILED and plan == BREAKDOWN
    event = PaymentEvent(event_type, order_id, _transaction_id(fields), plan,
                         _pay_sequence(fields, required=dunning) if acted_on else None,
                         _transaction_amount(fields, event_type) if acted_on else None)
    currency = _text(fields, "currency") or _text(fields, "transaction_currency")
    return DigistoreIpn(
        event=event, digistore_event=name, billing_type=billing_type, billing_stop_reason=stop_reason,
        tracking=_text(fields, "custom"), buyer_email=_text(fields, "buyer_email"),
        product_id=_text(fields, "product_id"), product_name=_text(fields, "product_name"),
        # The plan as the IPN states it matters only to a missed installment; elsewhere it is not read.
        number_of_installments=_whole(fields, "number_of_installments") if dunning else None,
        first_amount=_money(fields, "first_amount", currency) if dunning else None,
        other_amounts=_money(fields, "other_amounts", currency) if dunning else None,
        billing_interval=_text(fields, "other_billing_intervals"),
    )


def _transaction_amount(fields: Mapping[str, Any], event_type: str) -> Money | None:
    """The money that moved: required for payments, refunds and charge-backs; a missed payment may carry none."""
    if event_type == RECURRING_CANCELLED:
        return None
    currency = _text(fields, "transaction_currency")
    if event_type == FAILED and _text(fields, "transaction_amount") is None:
        return None
    if currency is None:
        raise IpnFieldError("transaction_currency", "required, an ISO 4217 code")
    amount = _money(fields, "transaction_amount", currency)
    if amount is None:
        raise IpnFieldError("transaction_amount", "required, a decimal amount")
    return amount


def _money(fields: Mapping[str, Any], name: str, currency: str | None) -> Money | None:
    text = _text(fields, name)
    if text is None:
        return None
    if len(text) > MAX_AMOUNT_TEXT:
        raise IpnFieldError(name, f"longer than {MAX_AMOUNT_TEXT} characters")
    if currency is None:
        raise IpnFieldError("currency", "required with an amount, an ISO 4217 code")
    try:
        exponent(currency)
    except MoneyError as exc:
        raise IpnFieldError("transaction_currency" if name == "transaction_amount" else "currency",
                            str(exc)) from None
    try:
        return Money.parse(text, currency)
    except MoneyError as exc:
        raise IpnFieldError(name, str(exc)) from None


def _pay_sequence(fields: Mapping[str, Any], *, required: bool) -> int | None:
    """``pay_sequence_no`` as the 1-based number of the payment; 0 (a single payment) and absence give None."""
    number = _whole(fields, "pay_sequence_no")
    if number is not None and not 0 <= number <= 1000:
        raise IpnFieldError("pay_sequence_no", "must be a whole number from 1")
    if number == 0:
        number = None
    if number is None and required:
        raise IpnFieldError("pay_sequence_no", "required for installment plans, a whole number from 1")
    return number


def _whole(fields: Mapping[str, Any], name: str) -> int | None:
    text = _text(fields, name)
    if text is None:
        return None
    if not _WHOLE_NUMBER.fullmatch(text):
        raise IpnFieldError(name, "must be a whole number")
    return int(text)


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    """A field's value, or None when it is absent or empty (Digistore24 sends unused fields empty)."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise IpnFieldError(name, "must be a string")
    return value


def _identifier(fields: Mapping[str, Any], name: str, *, max_length: int) -> str:
    """A required identifier stored in its own column: printable text of bounded length."""
    value = _text(fields, name)
    if value is None:
        raise IpnFieldError(name, "required, a string")
    if len(value) > max_length:
        raise IpnFieldError(name, f"longer than {max_length} characters")
    if not _printable(value):
        raise IpnFieldError(name, "must be printable text")
    return value


def _transaction_id(fields: Mapping[str, Any]) -> str | None:
    """Any length (a long one is deduplicated by its SHA-256), but printable: it ends up in a key column."""
    value = _text(fields, "transaction_id")
    if value is not None and not _printable(value):
        raise IpnFieldError("transaction_id", "must be printable text")
    return value


def _order_id_if_any(fields: Mapping[str, Any]) -> str:
    """Events dunlink does not act on may concern no order (an affiliation); they are stored with ``""``."""
    if _text(fields, "order_id") is None:
        return ""
    return _identifier(fields, "order_id", max_length=MAX_ORDER_ID)


def _printable(value: str) -> bool:
    # NUL cannot be stored in PostgreSQL text and a lone surrogate cannot be encoded for any database.
    return value.isprintable() or not any(unicodedata.category(c) in ("Cc", "Cs") for c in value)
