"""The steps of a case whose vendor makes the replacement by hand in CopeCart (``replacement_by = "vendor"``).

CopeCart gives vendors no API to create or cancel orders. For such a vendor dunlink rebuilds what is owed from
the IPNs it stored for the order (``platforms.copecart.owed``), emails the vendor a task (what to enter in
CopeCart's phone offer, and a link to the case's vendor page), reminds daily, and tells the vendor to deactivate
a link that is no longer wanted. The pipeline calls these for the case's steps as it calls the order API for the others.
"""

from __future__ import annotations

import json
from email.message import EmailMessage
from typing import Any

from adapters.email.message import compose, mailbox
from adapters.email.port import MailError
from adapters.email.render import (
    ScheduleLine,
    VendorDeactivateContext,
    VendorReminderContext,
    VendorTaskContext,
    format_money,
)
from domain.case import (
    DEACTIVATE_EXPIRED,
    REASON_INSTALLMENTS_UNSEEN,
    REASON_NO_REPLACEMENT_PLAN,
    Buyer,
    DunningCase,
    Step,
)
from domain.money import Money, MoneyError
from domain.plans import PlanError
from dunlink.config.vendors import Vendor
from dunlink.usecases.ports import Outcome, Services
from platforms.copecart import owed


class NoVendorPage(Exception):
    """The vendor page cannot be linked: DUNLINK_SECRET_KEY is not set in this process."""


def page_path(services: Services, case_id: str) -> str:
    """The vendor page of a case, as a path under ``DUNLINK_PUBLIC_URL``."""
    if services.tokens is None:
        raise NoVendorPage("DUNLINK_SECRET_KEY is not set: the vendor page cannot be linked")
    return f"/vendor/cases/{services.tokens.token(case_id)}"


def page_url(services: Services, case_id: str) -> str:
    return services.settings.public_url + page_path(services, case_id)


def plan_from_ipns(services: Services, case: DunningCase, vendor: Vendor) -> Outcome:
    """Rebuild the original's plan from its stored IPNs and let the case plan the replacement from it.

    What the IPNs cannot settle goes to a person before anything is asked of anyone: installments before the
    failed one with nothing seen for them (until a person confirms them paid), or a history that does not add
    up. A failed installment that was paid after all closes the case.
    """
    with services.uow() as uow:
        bodies = uow.inbox.bodies_for_order(case.vendor, case.original_order_id)
    fields = [parsed for parsed in (_json_object(body) for body in bodies) if parsed is not None]
    failing_fields = next((f for f in fields if _is_failure_of(f, case.failed_installment)), None)
    if failing_fields is None:
        reason = f"no payment.failed IPN of installment {case.failed_installment} is stored for the order"
        return lambda c, now: c.cannot_plan(reason, code=REASON_NO_REPLACEMENT_PLAN, now=now)
    try:
        failing = owed.SeenIpn.from_fields(failing_fields)
        plan = owed.rebuild_plan(failing, owed.read_seen(fields), confirmed_paid=case.confirmed_paid)
    except owed.FailedInstallmentPaid:
        return lambda c, now: c.original_paid(installment=c.failed_installment, now=now)
    except owed.UnseenInstallments as exc:
        unseen, message = list(exc.installments), str(exc)
        return lambda c, now: c.cannot_plan(message, code=REASON_INSTALLMENTS_UNSEEN, now=now,
                                            params={"installments": ", ".join(map(str, unseen))})
    except (PlanError, MoneyError) as exc:
        why = f"the IPNs seen for the order do not add up: {exc}"
        return lambda c, now: c.cannot_plan(why, code=REASON_NO_REPLACEMENT_PLAN, now=now)
    buyer = Buyer(email=_text(failing_fields, "buyer_email"), first_name=_text(failing_fields, "buyer_firstname"),
                  last_name=_text(failing_fields, "buyer_lastname"),
                  country_code=_text(failing_fields, "buyer_country_code") or None,
                  id=_text(failing_fields, "buyer_id") or None)
    product_id, product_name = _text(failing_fields, "product_id"), _text(failing_fields, "product_name")
    today = services.clock().astimezone(vendor.zone).date()
    undeliverable = _undeliverable(buyer, plan.currency, vendor)
    return lambda c, now: c.plan(plan, order_vendor=c.vendor, order_status="active", buyer=buyer,
                                 product_id=product_id, product_name=product_name, today=today, now=now,
                                 undeliverable=undeliverable)


def _json_object(body: str) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _is_failure_of(fields: dict[str, Any], installment: int) -> bool:
    return fields.get("event_type") == "payment.failed" and str(fields.get("rate_number", "")).strip() == str(
        installment)


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    return value.strip() if isinstance(value, str) else ""


def _undeliverable(buyer: Buyer, currency: str, vendor: Vendor) -> str | None:
    """What would keep the buyer's email from going out, found before the vendor is asked to do anything."""
    try:
        mailbox(f"{buyer.first_name} {buyer.last_name}", buyer.email)
        format_money(Money(0, currency), vendor.locale)
    except (ValueError, MailError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# -- the vendor's emails ------------------------------------------------------------------------------------


def task_context(services: Services, case: DunningCase, vendor: Vendor) -> VendorTaskContext:
    """What the vendor enters in CopeCart's phone offer, as the task email and the vendor page show it."""
    assert case.replacement is not None and case.buyer is not None
    plan = case.replacement
    return VendorTaskContext(
        case_id=case.id, locale=vendor.locale, vendor_name=vendor.name, order_id=case.original_order_id,
        buyer_first_name=case.buyer.first_name, buyer_last_name=case.buyer.last_name,
        buyer_email=case.buyer.email, buyer_country_code=case.buyer.country_code,
        product_id=case.product_id or "", product_name=case.product_name or "",
        replacement=case.replacement_kind.value,
        schedule=tuple(ScheduleLine(i.number, i.amount, i.due_date) for i in plan.installments),
        frequency=plan.frequency.value if plan.frequency and len(plan.installments) > 1 else None,
        total=plan.outstanding, page_url=page_url(services, case.id), accent_colour=vendor.accent_colour,
        logo_url=vendor.logo_url, imprint=vendor.imprint, support_url=vendor.support_url)


def vendor_message(services: Services, case: DunningCase, vendor: Vendor, step: Step) -> EmailMessage:
    """The task, a daily reminder, or the request to deactivate a link: to the vendor's ``tasks_email``."""
    task = task_context(services, case, vendor)
    renderer = services.renderer
    if step is Step.SEND_VENDOR_TASK:
        rendered = renderer.vendor_task(task)
    elif step is Step.SEND_VENDOR_REMINDER:
        since = case.vendor_task_sent_at or services.clock()
        rendered = renderer.vendor_reminder(VendorReminderContext(
            **_fields(task), waiting_for=case.vendor_waiting_for,
            days_waiting=max(1, (services.clock() - since).days)))
    else:
        rendered = renderer.vendor_deactivate_link(VendorDeactivateContext(
            **_fields(task), why="expired" if case.reason == DEACTIVATE_EXPIRED else "original_paid",
            payment_url=case.payment_url or "", new_order_id=case.replacement_order_id))
    return compose(rendered=rendered, case_id=case.id, step=case.email_key(step), to_address=vendor.tasks_email,
                   to_name=vendor.name, from_address=services.settings.mail_from, from_name=vendor.name,
                   reply_to=None, sent_at=services.clock())


def _fields(task: VendorTaskContext) -> dict[str, Any]:
    return {name: getattr(task, name) for name in task.__dataclass_fields__}
