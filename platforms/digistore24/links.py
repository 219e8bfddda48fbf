"""The two writes dunlink makes on Digistore24: a personal payment link (``createBuyUrl``) and the end of the
original purchase's rebilling (``stopRebilling``), with what each answers.

A buy URL is not an order: it is an order form with the buyer, the plan and the tracking value filled in. The
order comes into being when the buyer pays through it, and its IPN carries the tracking value back as
``custom``; that is how the payment finds its case. Digistore24 takes the link's validity as a duration in
hours (``24h`` by default, ``2h`` in its example), so dunlink asks for the whole hours left until the case
expires: the link lapses at or before the expiry, never after it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from adapters.platform.errors import MalformedResponse
from adapters.platform.port import Buyer
from domain.plans import InstallmentPlan
from platforms.digistore24.plans import payment_plan_fields

# Where Digistore24's buy URLs take the buyer: its checkout, on a domain of its own (docs/platforms/digistore24.md).
CHECKOUT_HOSTS = ("www.checkout-ds24.com", "www.digistore24.com")
# Digistore24 documents ``custom`` as a string of at most 63 characters.
MAX_TRACKING = 63


@dataclass(frozen=True, slots=True)
class NewBuyUrl:
    """What the pipeline asks for: ``plan`` for ``product_id``, the buyer filled in, the case id as tracking."""

    product_id: str
    buyer: Buyer
    plan: InstallmentPlan
    tracking: str
    expires_at: dt.datetime

    def fields(self, *, now: dt.datetime) -> dict[str, str]:
        """The ``createBuyUrl`` form fields. Raises ValueError for a link that could not be valid or traced."""
        if not self.tracking or len(self.tracking) > MAX_TRACKING or not self.tracking.isprintable():
            raise ValueError(f"tracking must be 1 to {MAX_TRACKING} printable characters")
        hours = valid_hours(now, self.expires_at)
        fields = {"product_id": self.product_id, **payment_plan_fields(self.plan),
                  "buyer[email]": self.buyer.email, "buyer[first_name]": self.buyer.first_name,
                  "buyer[last_name]": self.buyer.last_name, "buyer[country]": self.buyer.country_code,
                  # The buyer pays as the person who owes it: address and name prefilled, not changeable.
                  "buyer[readonly_keys]": "email_and_name",
                  "tracking[custom]": self.tracking, "valid_until": f"{hours}h"}
        return fields


def valid_hours(now: dt.datetime, expires_at: dt.datetime) -> int:
    """Whole hours from ``now`` to ``expires_at``, rounded down; a link must be valid for at least one."""
    if now.tzinfo is None or expires_at.tzinfo is None:
        raise ValueError("now and expires_at must carry a time zone")
    hours = math.floor((expires_at - now).total_seconds() / 3600)
    if hours < 1:
        raise ValueError(f"the case expires at {expires_at.isoformat()}: too soon for a payment link")
    return hours


@dataclass(frozen=True, slots=True)
class BuyUrl:
    """A created link. ``valid_until`` is ours (now + the hours asked for); ``valid_until_text`` is Digistore24's
    own answer, kept as text because its time zone is not documented."""

    id: str
    url: str
    valid_until: dt.datetime
    valid_until_text: str | None

    @classmethod
    def from_api(cls, data: Any, *, valid_until: dt.datetime) -> BuyUrl:
        if not isinstance(data, Mapping):
            raise MalformedResponse("createBuyUrl: data must be an object")
        url = data.get("url")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
            raise MalformedResponse(f"createBuyUrl: url {url!r} is not a web address")
        link_id = data.get("id")
        if isinstance(link_id, int) and not isinstance(link_id, bool):
            link_id = str(link_id)
        if not isinstance(link_id, str) or not link_id:
            raise MalformedResponse("createBuyUrl: id must be a non-empty string or number")
        text = data.get("valid_until")
        return cls(id=link_id, url=str(url), valid_until=valid_until,
                   valid_until_text=text if isinstance(text, str) and text else None)


@dataclass(frozen=True, slots=True)
class RebillingStop:
    """``stopRebilling``'s answer: whether this call changed anything and whether rebilling is still on."""

    purchase_id: str
    modified: bool
    rebilling_active: bool
    billing_status: str | None
    code: str | None
    note: str | None

    @classmethod
    def from_api(cls, data: Any, purchase_id: str) -> RebillingStop:
        if not isinstance(data, Mapping):
            raise MalformedResponse("stopRebilling: data must be an object")
        return cls(purchase_id=purchase_id, modified=_yes_no(data, "modified"),
                   rebilling_active=_yes_no(data, "rebilling_active"),
                   billing_status=_optional(data, "billing_status"), code=_optional(data, "code"),
                   note=_optional(data, "note"))


def _yes_no(data: Mapping[str, Any], key: str) -> bool:
    """Digistore24 writes booleans as ``"Y"``/``"N"``; anything else is not its answer."""
    value = data.get(key)
    if value not in ("Y", "N"):
        raise MalformedResponse(f"stopRebilling: {key} must be Y or N, got {value!r}")
    return bool(value == "Y")


def _optional(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None
