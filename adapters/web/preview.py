"""Sample vendor pages, one per state a case's page can be in, built on the sample task email's case: so the page
can be seen and tested without a database, a token or a running api."""

from __future__ import annotations

from typing import Any

from adapters.email.preview import SAMPLE_PAGE_URL, sample_vendor_task
from adapters.web.vendor_page import VendorPageContext

SAMPLE_PAYMENT_URL = "https://www.copecart.com/orders/9f3e7a21/checkout?rid=7Hq2xvN3rU0pYd1mZ9sKq4LwT8cFj2Ws"

# Where the vendor's part stands in each state, as the case would record it.
_STATES: dict[str, dict[str, Any]] = {
    "link": dict(payment_url=None, new_order_id=None, original_cancelled=False, buyer_emailed=False,
                 cannot_generate=False, ended_as=None),
    "original_cancelled": dict(payment_url=SAMPLE_PAYMENT_URL, new_order_id="CC-2041", original_cancelled=False,
                               buyer_emailed=False, cannot_generate=False, ended_as=None),
    "person": dict(payment_url=None, new_order_id=None, original_cancelled=False, buyer_emailed=False,
                   cannot_generate=True, ended_as=None),
    "buyer_payment": dict(payment_url=SAMPLE_PAYMENT_URL, new_order_id="CC-2041", original_cancelled=True,
                          buyer_emailed=True, cannot_generate=False, ended_as=None),
    "ended": dict(payment_url=SAMPLE_PAYMENT_URL, new_order_id="CC-2041", original_cancelled=True,
                  buyer_emailed=True, cannot_generate=False, ended_as="recovered"),
}
PAGE_STATES = tuple(_STATES)


def sample_page(locale: str, waiting_for: str = "link", **changes: Any) -> VendorPageContext:
    """The sample case's page in state ``waiting_for``; ``changes`` override any field (a problem, say)."""
    fields = dict(_STATES[waiting_for], task=sample_vendor_task(locale), waiting_for=waiting_for,
                  allowed_hosts=("copecart.com",))
    fields.update(changes)
    return VendorPageContext(**fields)


__all__ = ["PAGE_STATES", "SAMPLE_PAGE_URL", "SAMPLE_PAYMENT_URL", "sample_page"]
