"""The payment events dunlink acts on, whichever platform sent them.

Each platform's package (``platforms/<name>/``) verifies its webhooks and reads their fields into these; the use
cases and the dunning case know only this shape.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.money import Money

FAILED = "payment.failed"
MADE = "payment.made"
REFUNDED = "payment.refunded"
CHARGED_BACK = "payment.charged_back"
RECURRING_CANCELLED = "payment.recurring.cancelled"
ACTED_ON = frozenset({FAILED, MADE, REFUNDED, CHARGED_BACK, RECURRING_CANCELLED})
BREAKDOWN = "breakdown_payment"

# Identifiers are stored in columns of these widths; longer ones are refused rather than cut.
MAX_EVENT_TYPE = 64
MAX_ORDER_ID = 128
# Far beyond any real amount, and short enough that parsing it costs nothing.
MAX_AMOUNT_TEXT = 32


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
    # Who paid for what: matches a payment on an order the vendor made by hand to its case.
    buyer_email: str | None = None
    product_id: str | None = None
    # What the platform carried back from a payment link dunlink made (Digistore24's ``custom``): the case id.
    tracking: str | None = None

    @property
    def acted_on(self) -> bool:
        return self.event_type in ACTED_ON

    @property
    def starts_dunning(self) -> bool:
        return self.event_type == FAILED and self.payment_plan == BREAKDOWN


def dedup_key(fields: Mapping[str, Any], raw_body: bytes) -> str:
    """``transaction_id`` where the platform sends one, else the SHA-256 of the exact body.

    An id too long for the key column is replaced by its own SHA-256, never cut: two ids sharing a prefix
    must stay two events.
    """
    transaction = fields.get("transaction_id")
    if isinstance(transaction, str) and transaction:
        if len(transaction) <= 120:
            return transaction
        return "sha256-id:" + hashlib.sha256(transaction.encode("utf-8", "surrogatepass")).hexdigest()
    return "sha256:" + hashlib.sha256(raw_body).hexdigest()
