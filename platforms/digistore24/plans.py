"""Digistore24's payment plans in the domain's terms, and back.

Digistore24 describes a plan as a first amount, one amount for every later payment, a number of payments and
billing intervals written ``<count>_<unit>`` (``1_month``, ``12_month``, ``7_day`` are its documented
examples). Only plans that shape can express are sent; anything else is refused before a call is made.
"""

from __future__ import annotations

import re

from adapters.platform.errors import PermanentPlatformError
from domain.money import Money
from domain.plans import Frequency, InstallmentPlan, InstallmentStatus, PlanError

# Day and month units only: those are the ones Digistore24's documentation shows.
_INTERVALS = {
    Frequency.DAILY: "1_day", Frequency.WEEKLY: "7_day", Frequency.BIWEEKLY: "14_day",
    Frequency.MONTHLY: "1_month", Frequency.QUARTERLY: "3_month", Frequency.HALF_YEARLY: "6_month",
    Frequency.YEARLY: "12_month",
}
_FREQUENCIES = {interval: frequency for frequency, interval in _INTERVALS.items()}
_READ_ALSO = {"1_week": Frequency.WEEKLY, "2_week": Frequency.BIWEEKLY, "1_year": Frequency.YEARLY}
_INTERVAL = re.compile(r"[0-9]{1,3}_(day|week|month|year)")


class UnsupportedPlan(PermanentPlatformError):
    """A plan Digistore24's payment plan cannot express (unequal follow-up payments, an unknown interval)."""


def interval_of(frequency: Frequency) -> str:
    """The Digistore24 billing interval of a domain frequency (``Frequency.MONTHLY`` is ``1_month``)."""
    return _INTERVALS[frequency]


def frequency_of(interval: str) -> Frequency:
    """The domain frequency of a Digistore24 billing interval; one dunlink has no schedule for is refused."""
    text = interval.strip().lower()
    found = _FREQUENCIES.get(text) or _READ_ALSO.get(text)
    if found is None:
        why = "not a Digistore24 billing interval" if not _INTERVAL.fullmatch(text) else "no dunlink schedule for it"
        raise PlanError(f"billing interval {interval!r}: {why}")
    return found


def payment_plan_fields(plan: InstallmentPlan) -> dict[str, str]:
    """``payment_plan[...]`` fields for ``createBuyUrl`` asking for exactly ``plan``.

    The first payment is taken at checkout, the others every interval after it; Digistore24 has one amount for
    all follow-up payments, so a plan whose later installments differ is refused (:class:`UnsupportedPlan`).
    """
    if any(item.status is not InstallmentStatus.OPEN for item in plan.installments):
        raise UnsupportedPlan("a payment link asks for open installments only")
    amounts = [item.amount for item in plan.installments]  # never empty, every one above zero: the plan says so
    first, later = amounts[0], amounts[1:]
    if any(amount != later[0] for amount in later):
        raise UnsupportedPlan("Digistore24 charges one amount for every payment after the first; this plan has "
                              f"{', '.join(str(a) for a in later)}")
    fields = {
        "payment_plan[first_amount]": first.decimal_string(),
        "payment_plan[other_amounts]": later[0].decimal_string() if later else Money.zero(plan.currency)
        .decimal_string(),
        "payment_plan[currency]": plan.currency,
        "payment_plan[number_of_installments]": str(len(amounts)),
    }
    if later and plan.frequency is not None:  # a plan of several installments always has one
        fields["payment_plan[first_billing_interval]"] = interval_of(plan.frequency)
        fields["payment_plan[other_billing_intervals]"] = interval_of(plan.frequency)
    return fields

