"""CopeCart IPNs as the sandbox sends them: the fixtures' shape, signed over the exact bytes sent."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from adapters.platform.port import Order
from domain.money import Money

# Enough names for demos; CopeCart sends the country's English name next to its code.
_COUNTRIES = {
    "DE": "Germany", "AT": "Austria", "CH": "Switzerland", "GB": "United Kingdom", "US": "United States",
    "FR": "France", "NL": "Netherlands", "BE": "Belgium", "IT": "Italy", "ES": "Spain", "PL": "Poland",
    "LU": "Luxembourg", "DK": "Denmark", "SE": "Sweden",
}

EVENTS = {"fail": ("payment.failed", "failed"), "pay": ("payment.made", "paid")}


def build_ipn(order: Order, number: int, *, action: str, transaction_id: str, ordered_at: datetime,
              now: datetime) -> dict[str, Any]:
    """The IPN CopeCart would send when installment ``number`` of ``order`` failed or was paid.

    ``earned_amount`` of a payment is the amount less a 10% platform fee, like the fixtures.
    """
    event_type, payment_status = EVENTS[action]
    installments = order.plan.installments
    this = installments[number - 1]
    breakdown = order.plan.kind == "installments"

    def money(minor: int) -> str:
        return Money(minor, order.currency).decimal_string()

    following = installments[number] if number < len(installments) else None
    return {
        "event_type": event_type,
        "order_id": order.id,
        "order_date": ordered_at.date().isoformat(),
        "order_time": ordered_at.strftime("%H:%M:%S"),
        "order_source_identifier": None,
        "earned_amount": money(this.amount * 9 // 10 if action == "pay" else 0),
        "quantity": "1",
        "total_number_of_payments": str(len(installments)) if breakdown else None,
        "payment_plan": "breakdown_payment" if breakdown else "one_time_payment",
        "payment_status": payment_status,
        "payment_method": "credit_card",
        "is_upsell": False,
        "is_addon": False,
        "product_id": order.product_id,
        "product_name": order.product_name,
        "product_type": "digital",
        "buyer_id": order.buyer.id,
        "buyer_firstname": order.buyer.first_name,
        "buyer_lastname": order.buyer.last_name,
        "buyer_email": order.buyer.email,
        "buyer_country": _COUNTRIES.get(order.buyer.country_code, order.buyer.country_code),
        "buyer_country_code": order.buyer.country_code,
        "first_payment": money(installments[0].amount) if breakdown else None,
        "next_payments": money(installments[min(1, len(installments) - 1)].amount) if breakdown else None,
        "next_payment_at": following.due_date.isoformat() if breakdown and following else None,
        "frequency": order.plan.frequency if breakdown else None,
        "transaction_date": this.due_date.isoformat(),
        "transaction_id": transaction_id,
        "transaction_amount": money(this.amount),
        "transaction_currency": order.currency,
        "transaction_type": "sale",
        "transaction_processed_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rate_number": str(number),
        "test_payment": False,
        "metadata": None,
    }


def recurring_cancelled(order: Order, *, transaction_id: str, ordered_at: datetime, now: datetime) -> dict[str, Any]:
    """The IPN CopeCart sends when an order's installment plan is cancelled: ``rate_number`` names the first
    installment that will now not be charged."""
    installments = order.plan.installments
    unpaid = next((i.number for i in installments if i.status not in ("paid", "void")), len(installments))
    payload = build_ipn(order, unpaid, action="fail", transaction_id=transaction_id, ordered_at=ordered_at, now=now)
    payload.update(event_type="payment.recurring.cancelled", payment_status="cancelled", earned_amount="0.00")
    return payload


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, indent=2).encode("utf-8")


def sign(secret: str, body: bytes) -> str:
    """``X-Copecart-Signature``: base64(HMAC-SHA256(secret, raw body))."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()).decode("ascii")
