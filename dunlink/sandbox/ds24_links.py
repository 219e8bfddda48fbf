"""Buy URLs as ``createBuyUrl`` makes them: read from the call's bracketed form fields, checked as Digistore24
checks them, kept so a test can see exactly what was asked for, and paid through by a sandbox buyer.

What Digistore24 refuses, the sandbox refuses with the same error code (docs/platforms/digistore24.md): a product
the vendor does not sell and an unknown affiliate are ``DS_ERR_NOT_FOUND`` (4); a read-only buyer field left out,
an invalid country, an amount or interval it can't read are ``DS_ERR_BAD_FUNCTION_PARAMS`` (3). Validity is
taken as whole hours (``72h``) or ``forever``, the forms Digistore24 documents; anything else is refused, so a
client that passes here sends nothing Digistore24 might read differently.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from domain.money import Money, MoneyError, exponent
from dunlink.sandbox.ds24_purchases import ApiError, Purchase, Purchases, check_interval, timestamp

MAX_CUSTOM = 63
READONLY = {"none": (), "email": ("email",), "email_and_name": ("email", "first_name", "last_name"),
            "all": ("email",)}
_HOURS = re.compile(r"([0-9]{1,6})h")
_COUNTRY = re.compile(r"[A-Z]{2}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


@dataclass(slots=True)
class BuyLink:
    """A personal order form: the plan, buyer and tracking it was made with, and the purchases paid through it."""

    id: str
    vendor: str
    url: str
    product_id: str
    product_name: str
    buyer: dict[str, str]
    readonly_keys: str
    currency: str
    first_amount: Money
    other_amounts: Money
    number_of_installments: int
    first_billing_interval: str
    other_billing_intervals: str
    tracking: dict[str, str]
    valid_until: dt.datetime | None
    created_at: dt.datetime
    params: dict[str, str]
    purchases: list[str] = field(default_factory=list)

    def expired(self, now: dt.datetime) -> bool:
        return self.valid_until is not None and now >= self.valid_until

    def api_data(self) -> dict[str, Any]:
        """``createBuyUrl``'s ``data``; ``valid_until`` in Digistore24's time format, empty for ``forever``."""
        return {"id": self.id, "url": self.url, "valid_until": timestamp(self.valid_until) if self.valid_until else "",
                "upgrade_status": "none"}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "vendor": self.vendor, "url": self.url,
            "product": {"id": self.product_id, "name": self.product_name}, "buyer": dict(self.buyer),
            "readonly_keys": self.readonly_keys,
            "payment_plan": {"first_amount": self.first_amount.decimal_string(),
                             "other_amounts": self.other_amounts.decimal_string(), "currency": self.currency,
                             "number_of_installments": self.number_of_installments,
                             "first_billing_interval": self.first_billing_interval,
                             "other_billing_intervals": self.other_billing_intervals},
            "tracking": dict(self.tracking),
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "created_at": self.created_at.isoformat(), "params": dict(self.params), "purchases": list(self.purchases),
        }

    def purchase(self, purchases: Purchases, now: dt.datetime) -> Purchase:
        """The order the buyer's payment through this link makes: a new purchase with the link's plan and
        tracking, its first payment made at checkout."""
        purchase = Purchase(
            id=purchases.new_id(), vendor=self.vendor, product_id=self.product_id, product_name=self.product_name,
            buyer={"id": purchases.new_buyer_id(), "email": self.buyer["email"],
                   "first_name": self.buyer.get("first_name", ""), "last_name": self.buyer.get("last_name", ""),
                   "country": self.buyer.get("country", "DE")},
            currency=self.currency, first_amount=self.first_amount, other_amounts=self.other_amounts,
            number_of_installments=self.number_of_installments, first_billing_interval=self.first_billing_interval,
            other_billing_intervals=self.other_billing_intervals, created_at=now,
            order_item_id=purchases.new_item_id(), custom=self.tracking.get("custom", ""),
            tracking=dict(self.tracking), buy_url=self.id)
        purchases.by_id[purchase.id] = purchase
        self.purchases.append(purchase.id)
        return purchase


def buy_link(params: Mapping[str, str], *, vendor: str, purchases: Purchases, link_id: str, url: str,
             now: dt.datetime) -> BuyLink:
    """The link ``createBuyUrl`` with ``params`` makes for ``vendor``; :class:`ApiError` as Digistore24 refuses."""
    product_id = params.get("product_id", "").strip()
    if not product_id:
        raise _bad("product_id is required")
    product = purchases.product(vendor, product_id)
    if product is None:
        raise ApiError(ApiError.NOT_FOUND, f"Not found: product {product_id}")
    affiliate = params.get("tracking[affiliate]", "")
    if affiliate:
        raise ApiError(ApiError.NOT_FOUND, f"Not found: affiliate {affiliate}")
    buyer, readonly = _buyer(params)
    plan = _plan(params, product)
    return BuyLink(id=link_id, vendor=vendor, url=url, product_id=product_id, product_name=product.product_name,
                   buyer=buyer, readonly_keys=readonly, **plan, tracking=_tracking(params),
                   valid_until=_valid_until(params.get("valid_until", "24h"), now), created_at=now,
                   params=dict(params))


def _bad(detail: str) -> ApiError:
    return ApiError(ApiError.BAD_FUNCTION_PARAMS, f"Invalid parameters for function call createBuyUrl(): {detail}")


def _bracketed(params: Mapping[str, str], group: str) -> dict[str, str]:
    prefix = f"{group}["
    return {key[len(prefix):-1]: value for key, value in params.items()
            if key.startswith(prefix) and key.endswith("]")}


def _buyer(params: Mapping[str, str]) -> tuple[dict[str, str], str]:
    buyer = {key: value for key, value in _bracketed(params, "buyer").items() if value != ""}
    readonly = buyer.pop("readonly_keys", "none")
    if readonly not in READONLY:
        raise _bad(f"buyer[readonly_keys] must be one of {', '.join(READONLY)}")
    for key in READONLY[readonly]:
        if key not in buyer:
            raise _bad(f"buyer[{key}] is read-only ({readonly}) but was not given")
    if "email" in buyer and not _EMAIL.fullmatch(buyer["email"]):
        raise _bad("buyer[email] is not an e-mail address")
    if "country" in buyer and not _COUNTRY.fullmatch(buyer["country"]):
        raise _bad(f"buyer[country] {buyer['country']!r} is not a two-letter country code")
    return buyer, readonly


def _plan(params: Mapping[str, str], product: Purchase) -> dict[str, Any]:
    """The payment plan asked for; without one, the product's own (that of its latest purchase)."""
    plan = _bracketed(params, "payment_plan")
    if not plan:
        return {"currency": product.currency, "first_amount": product.first_amount,
                "other_amounts": product.other_amounts, "number_of_installments": product.number_of_installments,
                "first_billing_interval": product.first_billing_interval,
                "other_billing_intervals": product.other_billing_intervals}
    currency = plan.get("currency") or product.currency
    try:
        exponent(currency)
    except MoneyError:
        raise _bad(f"payment_plan[currency] {currency!r} is not a currency") from None
    text = plan.get("number_of_installments", "1")
    if not (text.isascii() and text.isdigit() and int(text) <= 1000):
        raise _bad("payment_plan[number_of_installments] must be a whole number (1: single payment, 0: subscription)")
    count = int(text)
    first = _amount(plan, "first_amount", currency)
    other = _amount(plan, "other_amounts", currency) if count != 1 else Money.zero(currency)
    intervals = ("", "") if count == 1 else _intervals(plan)
    return {"currency": currency, "first_amount": first, "other_amounts": other, "number_of_installments": count,
            "first_billing_interval": intervals[0], "other_billing_intervals": intervals[1]}


def _amount(plan: Mapping[str, str], key: str, currency: str) -> Money:
    try:
        amount = Money.parse(plan.get(key), currency)
    except MoneyError as exc:
        raise _bad(f"payment_plan[{key}]: {exc}") from None
    if not amount.is_positive:
        raise _bad(f"payment_plan[{key}] must be more than zero")
    return amount


def _intervals(plan: Mapping[str, str]) -> tuple[str, str]:
    first = plan.get("first_billing_interval") or "1_month"
    try:
        return check_interval(first), check_interval(plan.get("other_billing_intervals") or first)
    except ValueError as exc:
        raise _bad(f"payment_plan: {exc}") from None


def _tracking(params: Mapping[str, str]) -> dict[str, str]:
    tracking = {key: value for key, value in _bracketed(params, "tracking").items() if value != ""}
    if len(tracking.get("custom", "")) > MAX_CUSTOM:
        raise _bad(f"tracking[custom] is longer than {MAX_CUSTOM} characters")
    return tracking


def _valid_until(text: str, now: dt.datetime) -> dt.datetime | None:
    if text == "forever":
        return None
    match = _HOURS.fullmatch(text)
    if match is None or int(match[1]) < 1:
        raise _bad(f"valid_until {text!r}: give whole hours such as 24h, or forever")
    return now + dt.timedelta(hours=int(match[1]))
