"""Installment plans and the replacement plan that asks for what is still owed.

A plan is the platform's schedule seen through what dunlink must know: which installments were paid, which
are owed, and when. ``replacement_plan`` is the one rule that turns a failed plan into the order the buyer
is asked to pay; its invariants (sums exactly to ``outstanding``, same currency, no zero or negative
installment) are checked by property tests over generated plans.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from enum import StrEnum
from typing import Any

from domain.money import Money, MoneyError, total
from domain.policy import ReplacementKind


class PlanError(ValueError):
    """A plan that cannot be built or is inconsistent (bad numbers, mixed currencies, bad fields)."""


class InstallmentStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    FAILED = "failed"
    REFUNDED = "refunded"
    CHARGED_BACK = "charged_back"
    VOID = "void"


# Statuses whose amount the buyer still owes: never paid, or paid and then given back.
OWED = frozenset({InstallmentStatus.OPEN, InstallmentStatus.FAILED, InstallmentStatus.REFUNDED,
                  InstallmentStatus.CHARGED_BACK})


class Frequency(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    BIWEEKLY = "biweekly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"
    HALF_YEARLY = "half_yearly"
    YEARLY = "yearly"


_MONTHS = {Frequency.MONTHLY: 1, Frequency.QUARTERLY: 3, Frequency.HALF_YEARLY: 6, Frequency.YEARLY: 12}
_DAYS = {Frequency.DAILY: 1, Frequency.WEEKLY: 7, Frequency.BIWEEKLY: 14}


def parse_frequency(value: object) -> Frequency:
    try:
        return Frequency(str(value).strip().lower().replace("-", "_"))
    except ValueError:
        raise PlanError(f"unknown payment frequency {value!r}") from None


def advance(start: date, frequency: Frequency, periods: int) -> date:
    """The date ``periods`` periods after ``start``; month ends are clamped (31 Jan + 1 month = 28/29 Feb).

    Always counted from ``start``, never step by step, so a schedule does not drift after a short month.
    """
    if frequency in _DAYS:
        return start + timedelta(days=_DAYS[frequency] * periods)
    months = start.month - 1 + _MONTHS[frequency] * periods
    year, month = start.year + months // 12, months % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True, slots=True)
class Installment:
    number: int
    amount: Money
    due_date: date
    status: InstallmentStatus

    @property
    def is_owed(self) -> bool:
        return self.status in OWED


@dataclass(frozen=True, slots=True)
class InstallmentPlan:
    currency: str
    frequency: Frequency | None
    installments: tuple[Installment, ...]

    def __post_init__(self) -> None:
        if not self.installments:
            raise PlanError("a plan needs at least one installment")
        for position, item in enumerate(self.installments, start=1):
            if item.number != position:
                raise PlanError(f"installments must be numbered 1..n in order; found {item.number} at {position}")
            if item.amount.currency != self.currency:
                raise PlanError(f"installment {item.number} is in {item.amount.currency}, plan in {self.currency}")
            if not item.amount.is_positive:
                raise PlanError(f"installment {item.number} must be a positive amount, got {item.amount}")
        if len(self.installments) > 1 and self.frequency is None:
            raise PlanError("a plan of several installments needs a frequency")

    @property
    def scheduled(self) -> Money:
        """Everything the plan asks for, void installments excluded."""
        return total([i.amount for i in self.installments if i.status is not InstallmentStatus.VOID],
                     self.currency)

    @property
    def paid(self) -> Money:
        return total([i.amount for i in self.installments if i.status is InstallmentStatus.PAID], self.currency)

    @property
    def outstanding(self) -> Money:
        """Scheduled minus paid, plus what was refunded or charged back of what was paid."""
        return total([i.amount for i in self.installments if i.is_owed], self.currency)

    def installment(self, number: int) -> Installment:
        if not 1 <= number <= len(self.installments):
            raise PlanError(f"the plan has no installment {number} (it has {len(self.installments)})")
        return self.installments[number - 1]

    def with_status(self, number: int, status: InstallmentStatus) -> InstallmentPlan:
        self.installment(number)
        items = tuple(replace(i, status=status) if i.number == number else i for i in self.installments)
        return replace(self, installments=items)

    @classmethod
    def from_order(cls, order: Mapping[str, Any]) -> InstallmentPlan:
        """Build the plan from the platform's order JSON (``currency`` and ``plan``)."""
        try:
            currency = str(order["currency"])
            plan = order["plan"]
            frequency = plan.get("frequency")
            items = tuple(
                Installment(
                    number=int(raw["number"]),
                    amount=Money(_whole(raw["amount"]), currency),
                    due_date=date.fromisoformat(str(raw["due_date"])),
                    status=InstallmentStatus(raw["status"]),
                )
                for raw in plan["installments"]
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PlanError(f"order has no usable plan: {exc}") from None
        return cls(currency, parse_frequency(frequency) if frequency else None, items)

    @classmethod
    def from_ipn(cls, fields: Mapping[str, Any], *, failed: bool = True) -> InstallmentPlan:
        """Rebuild the plan from CopeCart IPN fields, for when the platform's order is not at hand.

        Installments before ``rate_number`` are taken as paid, ``rate_number`` itself as failed (or paid,
        with ``failed=False``), later ones as open. The first falls due on ``order_date``.
        """
        try:
            currency = str(fields["transaction_currency"])
            count = int(str(fields["total_number_of_payments"]))
            rate = int(str(fields["rate_number"]))
            first = Money.parse(fields["first_payment"], currency)
            following = Money.parse(fields["next_payments"], currency) if count > 1 else first
            frequency = parse_frequency(fields["frequency"]) if count > 1 else None
            start = date.fromisoformat(str(fields["order_date"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"IPN fields do not describe a plan: {exc}") from None
        if not 1 <= rate <= count:
            raise PlanError(f"rate_number {rate} is outside 1..{count}")
        current = InstallmentStatus.FAILED if failed else InstallmentStatus.PAID

        def status(number: int) -> InstallmentStatus:
            if number < rate:
                return InstallmentStatus.PAID
            return current if number == rate else InstallmentStatus.OPEN

        items = tuple(
            Installment(n, first if n == 1 else following,
                        advance(start, frequency, n - 1) if frequency else start, status(n))
            for n in range(1, count + 1)
        )
        return cls(currency, frequency, items)

    def to_json(self) -> dict[str, Any]:
        """The plan in the platform API's shape (amounts in minor units)."""
        return {
            "kind": "installments" if len(self.installments) > 1 else "one_time",
            "frequency": self.frequency.value if self.frequency else None,
            "installments": [
                {"number": i.number, "amount": i.amount.minor, "due_date": i.due_date.isoformat(),
                 "status": i.status.value}
                for i in self.installments
            ],
        }


def _whole(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MoneyError(f"amounts in orders are integers of minor units, got {value!r}")
    return value


def replacement_plan(
    plan: InstallmentPlan, *, kind: ReplacementKind, failed_number: int, today: date
) -> InstallmentPlan | None:
    """The plan of the replacement order, or ``None`` when nothing is owed.

    ``remaining_installments`` keeps the amount of every owed installment from the failed one on; the first
    falls due ``today`` and the rest follow at the original frequency. Anything owed from before the failed
    installment (refunded, charged back, an earlier failure) is added to that first installment, so the
    replacement always sums to ``outstanding``. ``single_payment`` asks for the whole of it today.
    """
    plan.installment(failed_number)
    owed = plan.outstanding
    if not owed.is_positive:
        return None
    if kind is ReplacementKind.SINGLE_PAYMENT or plan.frequency is None:
        return InstallmentPlan(plan.currency, None, (Installment(1, owed, today, InstallmentStatus.OPEN),))
    arrears = total([i.amount for i in plan.installments if i.number < failed_number and i.is_owed],
                    plan.currency)
    ahead = [i.amount for i in plan.installments if i.number >= failed_number and i.is_owed]
    amounts = [arrears + ahead[0], *ahead[1:]] if ahead else [arrears]
    items = tuple(
        Installment(n, amount, advance(today, plan.frequency, n - 1), InstallmentStatus.OPEN)
        for n, amount in enumerate(amounts, start=1)
    )
    return InstallmentPlan(plan.currency, plan.frequency if len(items) > 1 else None, items)
