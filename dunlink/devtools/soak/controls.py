"""What the soak does on each platform the sandbox plays: seed an order, fail an installment, pay, re-deliver.

CopeCart orders live under ``/sandbox/orders`` and its IPNs are signed JSON; Digistore24 purchases live under
``/sandbox/digistore24/purchases``, a missed payment is "missed", the buyer pays through a buy URL, and its IPNs
are form bodies carrying their own ``sha_sign``. The driver asks for the action; this module knows the route.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx

from dunlink.devtools.soak.model import SoakOrder

# The payment link in a buyer's email: a CopeCart replacement order's page, or a Digistore24 buy URL.
PAY_LINK = re.compile(r"http://127\.0\.0\.1:\d+/pay/([A-Za-z0-9-]+)")
BUY_URL = re.compile(r"http://127\.0\.0\.1:\d+/ds24/buy/([0-9]+)")
_DS24 = "/sandbox/digistore24"
_FORM = "application/x-www-form-urlencoded"


class PlatformControls:
    """The sandbox's controls for one soak, through one HTTP client shared with the driver's threads."""

    def __init__(self, http: httpx.Client, sandbox: str) -> None:
        self._http, self._sandbox = http, sandbox

    def seed(self, order: SoakOrder) -> None:
        if order.on_digistore24:
            self._post(f"{_DS24}/purchases", json=order.to_purchase(datetime.now(UTC))).raise_for_status()
        else:
            self._post("/sandbox/orders", json=order.to_json()).raise_for_status()

    def fail(self, order: SoakOrder) -> None:
        """The installment the soak fails; the sandbox delivers the platform's IPN before it answers."""
        if order.on_digistore24:
            self._post(f"{_DS24}/purchases/{order.order_id}/payments/{order.failed}/missed").raise_for_status()
        else:
            self._post(f"/sandbox/orders/{order.order_id}/installments/{order.failed}/fail").raise_for_status()

    def pay_original(self, order: SoakOrder) -> bool:
        """The failed installment paid on the original after all; False when Digistore24 refused it because
        dunlink had already stopped the rebilling (the race was lost: nothing was charged)."""
        if not order.on_digistore24:
            self._post(f"/sandbox/orders/{order.order_id}/installments/{order.failed}/pay").raise_for_status()
            return True
        answer = self._post(f"{_DS24}/purchases/{order.order_id}/payments/{order.failed}/paid")
        if answer.status_code == 409 and answer.json().get("error") == "rebilling_stopped":
            return False
        answer.raise_for_status()
        return True

    def pay_replacement(self, order: SoakOrder, reference: str) -> str:
        """The buyer pays the replacement order or through the buy URL named in the email; the order paid."""
        if not order.on_digistore24:
            self._post(f"/sandbox/orders/{reference}/installments/1/pay").raise_for_status()
            return reference
        answer = self._post(f"{_DS24}/buy-urls/{reference}/pay")
        answer.raise_for_status()
        return str(answer.json()["purchase"]["id"])

    def link_in(self, order: SoakOrder, text: str) -> str | None:
        """The replacement order id or buy URL id in a payment-link email's text."""
        found = (BUY_URL if order.on_digistore24 else PAY_LINK).search(text)
        return found.group(1) if found else None

    def deliver(self, entry: dict[str, Any]) -> httpx.Response:
        """An IPN the sandbox logged, posted again byte for byte as the platform would re-send it."""
        if entry.get("platform") == "digistore24":
            headers = {"Content-Type": _FORM}
        else:
            headers = {"X-Copecart-Signature": entry["signature"], "Content-Type": "application/json"}
        return self._http.post(entry["url"], content=entry["body"].encode("utf-8"), headers=headers)

    def purchases(self) -> dict[str, dict[str, Any]]:
        found: list[dict[str, Any]] = self._http.get(f"{self._sandbox}{_DS24}/purchases").json()
        return {purchase["id"]: purchase for purchase in found}

    def links(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._http.get(f"{self._sandbox}{_DS24}/buy-urls").json()
        return found

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self._http.post(f"{self._sandbox}{path}", **kwargs)


def buyer_of(entry: dict[str, Any]) -> str:
    """The buyer's address in a Digistore24 IPN's form body ('' for a CopeCart IPN): a purchase made through a
    buy URL is new to the soak, but its buyer is the original's."""
    if entry.get("platform") != "digistore24" or not entry.get("body"):
        return ""
    fields = dict(parse_qsl(str(entry["body"]), keep_blank_values=True))
    return fields.get("buyer_email", "")
