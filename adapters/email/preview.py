"""Sample data for every email, so a template can be seen and tested without a database or a webhook.

The samples are what a real case looks like on an ordinary day: a German and an English buyer, a
four-installment course, a vendor whose summary has quiet days, busy days and three cases for a person, and a
CopeCart vendor asked to make the replacement for three installments still owed by hand.
``dunlink emails preview`` renders them to files; the tests render them in both locales and in Chromium.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from adapters.email.render import (
    EMAILS,
    EmailContext,
    FinalNoticeContext,
    PaymentLinkContext,
    PersonCase,
    ReminderContext,
    ScheduleLine,
    SummaryFigures,
    VendorDeactivateContext,
    VendorReminderContext,
    VendorSummaryContext,
    VendorTaskContext,
    chart_days,
)
from domain.money import Money

SAMPLE_DAY = date(2026, 10, 1)
_VENDOR = "Lumen Yoga Academy"
_ACCENT = "#0f766e"
_URL = "https://pay.example.com/checkout/CC-2041?token=7Hq2xv"
_IMPRINT = """Lumen Yoga Academy GmbH
Kastanienallee 12, 10435 Berlin
Geschäftsführerin: Mara Lindqvist
Amtsgericht Charlottenburg, HRB 123456 B
USt-IdNr.: DE123456789"""
_SUPPORT = "https://lumen-yoga.example/help"
# Amounts recovered on the 30 days of the sample chart, in cents, oldest first: quiet weekends, a busy
# start of the month and one day that recovered nothing, so the chart shows its range.
_RECOVERED = (
    0, 9800, 14700, 4900, 0, 0, 19600, 24500, 9800, 14700, 4900, 0, 9800, 29400, 34300,
    19600, 9800, 0, 0, 14700, 19600, 4900, 9800, 24500, 0, 0, 39200, 14700, 9800, 19600,
)


def _link_fields(locale: str) -> dict[str, Any]:
    """What the three link emails share; the reminder and the final notice add their own fields to it."""
    first, last = ("Anna", "Meier") if locale == "de" else ("Emma", "Clarke")
    product = "Yoga-Lehrerausbildung 200h" if locale == "de" else "Yoga Teacher Training 200h"
    schedule = tuple(
        ScheduleLine(number, Money(14700, "EUR"), SAMPLE_DAY + timedelta(days=30 * (number - 1)))
        for number in range(1, 5)
    )
    return dict(
        case_id="case-2041", locale=locale, vendor_name=_VENDOR, buyer_first_name=first, buyer_last_name=last,
        product_name=product, outstanding=Money(58800, "EUR"), installments_left=4, schedule=schedule,
        payment_url=_URL, reply_to="hello@lumen-yoga.example", accent_colour=_ACCENT, order_id="CC-1874",
        new_order_id="CC-2041", imprint=_IMPRINT, support_url=_SUPPORT,
    )


def sample_payment_link(locale: str) -> PaymentLinkContext:
    return PaymentLinkContext(**_link_fields(locale))


def sample_reminder(locale: str) -> ReminderContext:
    return ReminderContext(**_link_fields(locale), reminder_number=1, expires_on=SAMPLE_DAY + timedelta(days=14))


def sample_final_notice(locale: str) -> FinalNoticeContext:
    return FinalNoticeContext(**_link_fields(locale), expires_on=SAMPLE_DAY + timedelta(days=14))


def sample_vendor_summary(locale: str) -> VendorSummaryContext:
    start = SAMPLE_DAY - timedelta(days=len(_RECOVERED) - 1)
    recovered = {start + timedelta(days=offset): Money(cents, "EUR") for offset, cents in enumerate(_RECOVERED)}
    month_amount = Money(sum(_RECOVERED), "EUR")
    return VendorSummaryContext(
        vendor_name=_VENDOR, locale=locale, day=SAMPLE_DAY,
        yesterday=SummaryFigures(opened=3, links_sent=3, recovered=2, recovered_amount=Money(19600, "EUR"),
                                 lost=1, recovery_rate=2 / 3),
        last_30_days=SummaryFigures(opened=61, links_sent=58, recovered=31, recovered_amount=month_amount,
                                    lost=9, recovery_rate=31 / 40),
        waiting=17,
        needs_person=(
            PersonCase(case_id="case-1987", order_id="CC-1987", reason_code="charged_back_after_replacement",
                       params={"installment": 2}),
            PersonCase(case_id="case-2033", order_id="CC-2033", reason_code="create_replacement_failed",
                       params={"attempts": 1}),
            PersonCase(case_id="case-2038", order_id="CC-2038", reason_code="paid_twice",
                       params={"amount": Money(4900, "EUR")}),
        ),
        chart=chart_days(SAMPLE_DAY, recovered, "EUR"), currency="EUR", accent_colour=_ACCENT, imprint=_IMPRINT,
        support_url=_SUPPORT,
    )


# A vendor page's address as the api makes it: the signed token is long and has no spaces, so pages and emails
# must wrap it.
SAMPLE_PAGE_URL = "http://127.0.0.1:8000/vendor/cases/ImNhc2UtMjA0MSI.aQ2kEA.7Hq2xvN3rU0pYd1mZ9sKq4LwT8cFj2Ws"


def _task_fields(locale: str) -> dict[str, Any]:
    """The case of the link emails as the vendor's task: the buyer paid one of four installments, three are owed."""
    first, last, email, country = (("Anna", "Meier", "anna.meier@example.de", "DE") if locale == "de"
                                   else ("Emma", "Clarke", "emma.clarke@example.co.uk", "GB"))
    product = "Yoga-Lehrerausbildung 200h" if locale == "de" else "Yoga Teacher Training 200h"
    schedule = tuple(
        ScheduleLine(number, Money(14700, "EUR"), SAMPLE_DAY + timedelta(days=30 * (number - 1)))
        for number in range(1, 4)
    )
    return dict(
        case_id="case-2041", locale=locale, vendor_name=_VENDOR, order_id="CC-1874", buyer_first_name=first,
        buyer_last_name=last, buyer_email=email, buyer_country_code=country, product_id="7b2c91e4",
        product_name=product, replacement="remaining_installments", schedule=schedule, frequency="monthly",
        total=Money(44100, "EUR"), page_url=SAMPLE_PAGE_URL, accent_colour=_ACCENT, imprint=_IMPRINT,
        support_url=_SUPPORT,
    )


def sample_vendor_task(locale: str) -> VendorTaskContext:
    return VendorTaskContext(**_task_fields(locale))


def sample_vendor_reminder(locale: str) -> VendorReminderContext:
    return VendorReminderContext(**_task_fields(locale), waiting_for="original_cancelled", days_waiting=2)


def sample_vendor_deactivate_link(locale: str) -> VendorDeactivateContext:
    return VendorDeactivateContext(**_task_fields(locale), why="expired",
                                   payment_url="https://www.copecart.com/orders/9f3e7a21/checkout",
                                   new_order_id="CC-2041")


SAMPLES: dict[str, Callable[[str], EmailContext]] = {
    "payment_link": sample_payment_link,
    "reminder": sample_reminder,
    "final_notice": sample_final_notice,
    "vendor_summary": sample_vendor_summary,
    "vendor_task": sample_vendor_task,
    "vendor_reminder": sample_vendor_reminder,
    "vendor_deactivate_link": sample_vendor_deactivate_link,
}


def sample(name: str, locale: str) -> EmailContext:
    """The sample context of email ``name``; an unknown name is refused with the list of names."""
    try:
        build = SAMPLES[name]
    except KeyError:
        raise ValueError(f"unknown email {name!r}; the emails are: {', '.join(EMAILS)}") from None
    return build(locale)
