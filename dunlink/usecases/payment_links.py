"""The platform steps of a case whose platform makes payment links (Digistore24), in place of the order API's.

Digistore24 creates no replacement order: it makes a personal payment link (``createBuyUrl``) for exactly what
is owed, the buyer filled in and the case id in its tracking, so the buyer's payment finds its case. The
original's rebilling is stopped only after the link exists (``stopRebilling``). Digistore24 has no idempotency
keys, so the link is made by the step that moves the case on: once recorded it is never asked for again, and
a call whose answer was lost can at worst leave one unused link that nobody is shown and that lapses by
itself. Nothing is cancelled at expiry either: the link lapses with the case.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from adapters.platform.errors import OrderCompleted
from adapters.platform.port import Buyer as PlatformBuyer
from adapters.platform.port import Order
from domain.case import DunningCase
from domain.events import FAILED
from domain.plans import Frequency, PlanError
from dunlink.usecases.ports import Outcome, PaymentLinkPlatform, Services
from platforms.digistore24.ipn import DigistoreIpn, parse_ipn, read_form
from platforms.digistore24.links import NewBuyUrl
from platforms.digistore24.plans import frequency_of

# The link stays valid as long as the case waits for the buyer: the vendor's days to pay.
DEFAULT_VALID_DAYS = 14


def billing_frequency(bodies: list[str], installment: int) -> Frequency | None:
    """The plan's billing interval, as the stored IPN of the missed installment states it (the purchase that
    Digistore24's API returns has none)."""
    for body in bodies:
        try:
            parsed = parse_ipn(read_form(body.encode("utf-8")))
        except ValueError:
            continue
        if isinstance(parsed, DigistoreIpn) and parsed.event.event_type == FAILED \
                and parsed.event.rate_number == installment and parsed.billing_interval:
            return frequency_of(parsed.billing_interval)
    return None


def _links(services: Services, case: DunningCase) -> PaymentLinkPlatform:
    return services.payment_links(services.vendors[case.vendor])


def fetch_original(services: Services, case: DunningCase,
                   plan_from: Callable[[Services, DunningCase, Order], Outcome]) -> Outcome:
    """Read the purchase to plan from, with its billing interval from the missed installment's IPN."""
    with services.uow() as uow:
        bodies = uow.inbox.bodies_for_order(case.vendor, case.original_order_id)
    try:
        frequency = billing_frequency(bodies, case.failed_installment)
    except PlanError as exc:
        why = str(exc)
        return lambda c, now: c.cannot_plan(f"the purchase's billing cannot be planned: {why}",
                                            code="no_replacement_plan", now=now)
    order = _links(services, case).get_order(case.original_order_id, frequency=frequency)
    return plan_from(services, case, order)


def create_link(services: Services, case: DunningCase, checked: Callable[[Services, str, str], str]) -> Outcome:
    """The buyer's payment link for exactly the replacement's plan, the case id as its tracking."""
    assert case.replacement is not None and case.buyer is not None
    now = services.clock()
    vendor = services.vendors[case.vendor]
    buyer = case.buyer
    link = NewBuyUrl(
        product_id=case.product_id or "", plan=case.replacement, tracking=case.id,
        buyer=PlatformBuyer(id=buyer.id or "", email=buyer.email, first_name=buyer.first_name,
                            last_name=buyer.last_name, country_code=buyer.country_code or ""),
        expires_at=now + timedelta(days=vendor.policy.expire_after_days or DEFAULT_VALID_DAYS))
    made = _links(services, case).create_buy_url(link, now=now)
    url = checked(services, made.url, services.settings.digistore24_url)
    return lambda c, at: c.replacement_created(order_id=made.id, payment_url=url, now=at)


def stop_original(services: Services, case: DunningCase) -> Outcome:
    """Stop the original purchase's rebilling, now that the link exists; a repeat changes nothing."""
    try:
        _links(services, case).stop_rebilling(case.original_order_id)
    except OrderCompleted:
        # Paid in full meanwhile: the link is withdrawn instead (it lapses unused).
        return lambda c, now: c.original_paid(installment=c.failed_installment, now=now)
    return lambda c, now: c.original_cancelled(now=now)


def withdraw_link(_services: Services, case: DunningCase) -> Outcome:
    """Nothing to cancel: the link was never sent to the buyer and lapses at its end."""
    return lambda c, now: c.replacement_cancelled(now=now)


def expire(_services: Services, case: DunningCase) -> Outcome:
    """The deadline passed: the link lapses with it; nothing to cancel."""
    return lambda c, now: c.expired(now=now)


def tracked_case_id(event_tracking: str | None) -> str | None:
    """The case id a payment through dunlink's link carries back (``custom``), if it looks like one."""
    if event_tracking and len(event_tracking) <= 32 and event_tracking.isalnum():
        return event_tracking
    return None


