"""Digistore24's side of dunning for one vendor: read the purchase, make the buyer's new payment link, stop the
original's rebilling. Every method raises only :class:`~adapters.platform.errors.PlatformError` subclasses
(and ValueError for a request dunlink itself got wrong).

Digistore24 has no idempotency keys. What keeps a retried step from acting twice:

- ``getPurchase`` only reads;
- ``stopRebilling`` on a stopped rebilling changes nothing (``modified`` is ``N``), so repeating it is safe;
- ``createBuyUrl`` repeated after a timeout may leave a second link nobody is ever shown: the buyer receives
  the link the case recorded, and any other lapses at its validity. Recording the link before emailing it is
  the pipeline's part (docs/platforms/digistore24.md, "What the pipeline needs").
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import httpx

from adapters.platform.errors import OrderCompleted, PermanentPlatformError
from adapters.platform.port import Order
from domain.plans import Frequency
from platforms.digistore24.api import DEFAULT_URL, DigistoreApi
from platforms.digistore24.links import BuyUrl, NewBuyUrl, RebillingStop, valid_hours
from platforms.digistore24.purchase import Purchase


class RebillingStillActive(PermanentPlatformError):
    """``stopRebilling`` answered but the rebilling runs on: the original could still charge the buyer."""


class DigistoreClient:
    """The Digistore24 API with one vendor's key; build one per vendor at start-up and close it at shutdown."""

    def __init__(
        self,
        api_key: str,
        *,
        vendor: str,
        base_url: str = DEFAULT_URL,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        attempts: int = 3,
        max_retry_after: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.vendor = vendor
        self._api = DigistoreApi(api_key, base_url=base_url, connect_timeout=connect_timeout,
                                 read_timeout=read_timeout, attempts=attempts, max_retry_after=max_retry_after,
                                 transport=transport, sleep=sleep)

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> DigistoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_purchase(self, purchase_id: str) -> Purchase:
        """The purchase (Digistore24's order) as Digistore24 sees it now."""
        _require_id(purchase_id)
        data = self._api.call("getPurchase", {"purchase_id": purchase_id}, about_purchase=True)
        return Purchase.from_api(data, purchase_id)

    def get_order(self, purchase_id: str, *, frequency: Frequency | None) -> Order:
        """The purchase as the port's order; ``frequency`` is its billing interval from the IPN."""
        return self.get_purchase(purchase_id).to_order(vendor=self.vendor, frequency=frequency)

    def create_buy_url(self, link: NewBuyUrl, *, now: dt.datetime) -> BuyUrl:
        """A personal payment link for exactly ``link.plan``, valid until at most ``link.expires_at``."""
        fields = link.fields(now=now)
        data = self._api.call("createBuyUrl", fields)
        return BuyUrl.from_api(data, valid_until=now + dt.timedelta(hours=valid_hours(now, link.expires_at)))

    def stop_rebilling(self, purchase_id: str) -> RebillingStop:
        """Stop the purchase's future payments at once (``force``), so the buyer cannot be charged twice.

        Already stopped is success (``modified`` False); a purchase paid in full raises :class:`OrderCompleted`;
        a rebilling that Digistore24 reports still active raises :class:`RebillingStillActive`.
        """
        _require_id(purchase_id)
        data = self._api.call("stopRebilling", {"purchase_id": purchase_id, "force": "Y"}, about_purchase=True)
        stop = RebillingStop.from_api(data, purchase_id)
        if stop.billing_status == "completed":
            raise OrderCompleted(f"stopRebilling {purchase_id}: the purchase is paid in full")
        if stop.rebilling_active:
            raise RebillingStillActive(f"stopRebilling {purchase_id}: rebilling still active "
                                       f"({stop.code or 'no code'}: {stop.note or 'no note'})")
        return stop


def _require_id(purchase_id: str) -> None:
    if not purchase_id or not purchase_id.strip() or not purchase_id.isprintable():
        raise ValueError("purchase_id must be a non-empty printable string")
