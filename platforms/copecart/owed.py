"""What is owed on a CopeCart order, rebuilt from the IPNs seen for it alone.

A vendor with ``replacement_by = "vendor"`` has no order API that dunlink could ask, so the installment plan
is rebuilt from the IPNs: the plan's terms (``payment_plan``, ``total_number_of_payments``, ``first_payment``,
``next_payments``, ``frequency``, ``order_date``, ``transaction_currency``) that every IPN of an order
carries, and what happened to each installment (``rate_number``, ``transaction_amount``) in the payments,
failures, refunds and charge-backs seen. The plan is then handed to ``domain.plans.replacement_plan``, the
same rule that computes every replacement. The amount it yields reaches a buyer, so whatever does not add up
raises :class:`~domain.plans.PlanError` with a reason a person can act on, never a guess.

The rules, in the order they are checked:

1. The failing event is a ``payment.failed`` of an installment plan (``breakdown_payment``) and carries the
   whole plan: a number of payments (1..1000), a positive first payment, and for several installments a
   positive following payment and a frequency; and the order date. A one-time payment has nothing to rebuild.
2. Events are told apart by their kind and ``transaction_id`` (required): the same pair again is a duplicate
   and counts once; the same pair with other contents is refused. Arrival order never matters: installments
   are judged by what was seen for them, counted, not by which IPN came last.
3. Every event belongs to the failing event's order, is in its currency, names an installment within the
   plan, and carries the same terms (a term an event does not carry, ``null`` or absent, is not compared;
   ``next_payment_at`` is never compared, since CopeCart moves it when it retries a charge). A payment or a
   failure is for exactly the plan's amount of its installment, so never zero or negative. A refund or a
   charge-back gives back exactly that amount: negative, as CopeCart sends it, or the same positive size.
   A partial refund does not fit a plan of whole installments and goes to a person.
4. Per installment, with ``paid`` the distinct payments seen and ``given back`` the refunds and charge-backs:
   - given back but never paid: refused (a refund of money dunlink never saw arrive);
   - paid minus given back below 0 or above 1: refused (given back more often than paid; paid twice);
   - paid once net: ``paid``. When that is the failed installment itself, the failure was cured (a retry
     went through, or its IPN overtook the failure's): nothing is owed for it and the order runs on, so
     :class:`FailedInstallmentPaid` is raised rather than a plan that would ask for later installments early;
   - paid and given back as often: owed again, ``charged_back`` if a charge-back is among the give-backs,
     else ``refunded`` (the failed installment itself stays ``failed``);
   - never paid: the failed installment is ``failed``; a later one ``failed`` if a failure was seen for it,
     else ``open``; an earlier one ``failed`` if a failure was seen for it (dunlink was receiving the
     order's IPNs then, and CopeCart sends a ``payment.made`` for every payment, so none came).
5. An installment before the failed one with nothing seen for it is unknown, and the IPNs cannot settle it:
   ``earned_amount`` is the vendor's share of that one transaction (``0.00`` on a failure), not a running
   total, and no other field says how many installments were paid. Taking it as paid could ask the buyer
   for too little; taking it as owed could make the buyer pay twice. Either is a wrong amount, so
   :class:`UnseenInstallments` names them for a person (typically dunlink began receiving the order's IPNs
   after they fell due). Once that person has checked them in CopeCart, ``confirmed_paid`` counts each as
   one payment seen and the same checks decide the rest.

Due dates follow ``order_date`` at the plan's frequency, as ``InstallmentPlan.from_ipn`` does.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any, TypeVar

from domain.money import Money, MoneyError, exponent
from domain.plans import (
    Frequency,
    Installment,
    InstallmentPlan,
    InstallmentStatus,
    PlanError,
    advance,
    parse_frequency,
)
from platforms.copecart import ipn as copecart

# As for rate_number in platforms.copecart.ipn: far beyond any real plan, and small enough to build at no cost.
MAX_INSTALLMENTS = 1000
_WHOLE_NUMBER = re.compile(r"[0-9]{1,4}")
_T = TypeVar("_T")
_AmountOf = Callable[[int], Money]


class FailedInstallmentPaid(PlanError):
    """The failed installment was paid after all: nothing is owed for it, so there is nothing to replace."""


class UnseenInstallments(PlanError):
    """Installments before the failed one with nothing seen for them: a person must check them."""

    def __init__(self, message: str, installments: tuple[int, ...]) -> None:
        super().__init__(message)
        self.installments = installments


class SeenKind(StrEnum):
    """The IPNs that say something about an installment's money."""

    FAILED = copecart.FAILED
    MADE = copecart.MADE
    REFUNDED = copecart.REFUNDED
    CHARGED_BACK = copecart.CHARGED_BACK


@dataclass(frozen=True, slots=True)
class PlanTerms:
    """The plan as one IPN describes it; ``None`` where the IPN did not carry the field.

    Attributes are named as CopeCart's fields, so that a disagreement is reported in the vendor's words.
    """

    payment_plan: str | None
    total_number_of_payments: int | None
    first_payment: Money | None
    next_payments: Money | None
    frequency: Frequency | None
    order_date: date | None


@dataclass(frozen=True, slots=True)
class SeenIpn:
    """One IPN seen for an order, reduced to what rebuilding its plan needs."""

    kind: SeenKind
    order_id: str
    transaction_id: str
    rate_number: int
    amount: Money
    terms: PlanTerms

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> SeenIpn:
        """Read an IPN body; a field missing or malformed raises ``PlanError`` naming it."""
        event_type = fields.get("event_type")
        try:
            kind = SeenKind(copecart.normalise_event_type(str(event_type)))
        except ValueError:
            raise PlanError(f"event_type {event_type!r} says nothing about an installment's money") from None
        currency = _currency(fields)
        return cls(
            kind=kind,
            order_id=_text(fields, "order_id"),
            transaction_id=_text(fields, "transaction_id"),
            rate_number=_whole(fields.get("rate_number"), "rate_number"),
            amount=_money(fields.get("transaction_amount"), currency, "transaction_amount"),
            terms=PlanTerms(
                payment_plan=_optional_text(fields, "payment_plan"),
                total_number_of_payments=_optional(fields, "total_number_of_payments", _whole),
                first_payment=_optional(fields, "first_payment", lambda v, n: _money(v, currency, n)),
                next_payments=_optional(fields, "next_payments", lambda v, n: _money(v, currency, n)),
                frequency=_optional(fields, "frequency", lambda v, n: parse_frequency(v)),
                order_date=_optional(fields, "order_date", _date),
            ),
        )


def read_seen(bodies: Iterable[Mapping[str, Any]]) -> list[SeenIpn]:
    """The IPN bodies stored for an order, kept in order, without those that move no money.

    ``payment.recurring.cancelled`` and event types dunlink does not act on say nothing about what was paid.
    """
    kinds = {kind.value for kind in SeenKind}
    return [SeenIpn.from_fields(body) for body in bodies
            if copecart.normalise_event_type(str(body.get("event_type"))) in kinds]


def rebuild_plan(failing: SeenIpn, seen: Iterable[SeenIpn], *,
                 confirmed_paid: Collection[int] = ()) -> InstallmentPlan:
    """The failing order's plan, each installment's status taken from what was seen (see the module's rules).

    ``seen`` is every IPN stored for the order, in any order, duplicates and the failing one included or not.
    ``confirmed_paid`` lists installments before the failed one that a person found paid in CopeCart.
    """
    if failing.kind is not SeenKind.FAILED:
        raise PlanError(f"transaction {failing.transaction_id} is a {failing.kind.value}, not a failed payment")
    count, amount_of, frequency, order_date = _terms_of(failing)
    events = _distinct([failing, *seen])
    for event in events:
        _check(event, failing, count, amount_of)
    failed = failing.rate_number
    confirmed = frozenset(confirmed_paid)
    outside = sorted(n for n in confirmed if not 1 <= n < failed)
    if outside:
        raise PlanError(f"only installments before the failed installment {failed} can be confirmed paid, "
                        f"not {_installments(outside)}")
    tallies: dict[int, _Tally] = defaultdict(_Tally)
    for event in events:
        tallies[event.rate_number].add(event)
    statuses = {n: _status(n, tallies[n], failed=failed, confirmed=n in confirmed) for n in range(1, count + 1)}
    unseen = tuple(n for n, status in statuses.items() if status is None)
    if unseen:
        raise UnseenInstallments(
            f"no payment or failure was seen for {_installments(unseen)} before the failed installment "
            f"{failed} of order {failing.order_id}: dunlink may have begun receiving its IPNs after they fell "
            "due; check them in CopeCart", unseen)
    items = tuple(
        Installment(n, amount_of(n), advance(order_date, frequency, n - 1) if frequency else order_date, status)
        for n, status in statuses.items() if status is not None
    )
    return InstallmentPlan(failing.amount.currency, frequency, items)


@dataclass(slots=True)
class _Tally:
    """Transactions seen for one installment, by kind."""

    by_kind: dict[SeenKind, list[str]] = field(default_factory=lambda: {kind: [] for kind in SeenKind})

    def add(self, event: SeenIpn) -> None:
        self.by_kind[event.kind].append(event.transaction_id)


def _status(number: int, tally: _Tally, *, failed: int, confirmed: bool) -> InstallmentStatus | None:
    """One installment's status by the module's rule 4, ``None`` when nothing tells (rule 5)."""
    made = tally.by_kind[SeenKind.MADE]
    given_back = tally.by_kind[SeenKind.REFUNDED] + tally.by_kind[SeenKind.CHARGED_BACK]
    paid = max(len(made), 1) if confirmed else len(made)
    if given_back and not paid:
        raise PlanError(f"installment {number} was refunded or charged back ({', '.join(given_back)}) "
                        "but no payment of it was seen")
    net = paid - len(given_back)
    if net < 0:
        raise PlanError(f"installment {number} was given back {len(given_back)} times "
                        f"({', '.join(given_back)}) but paid {paid} times")
    if net > 1:
        raise PlanError(f"installment {number} was paid {paid} times ({', '.join(made)}): "
                        "check whether the buyer was charged twice")
    if net == 1:
        if number == failed:
            raise FailedInstallmentPaid(f"the failed installment {number} was paid ({', '.join(made)}): "
                                        "nothing is owed for it")
        return InstallmentStatus.PAID
    if number == failed:
        return InstallmentStatus.FAILED
    if paid:
        return InstallmentStatus.CHARGED_BACK if tally.by_kind[SeenKind.CHARGED_BACK] else InstallmentStatus.REFUNDED
    if tally.by_kind[SeenKind.FAILED]:
        return InstallmentStatus.FAILED
    return InstallmentStatus.OPEN if number > failed else None


def _terms_of(failing: SeenIpn) -> tuple[int, _AmountOf, Frequency | None, date]:
    """The plan the failing event describes, all of it required: (count, amount of n, frequency, start)."""
    terms = failing.terms
    if terms.payment_plan != copecart.BREAKDOWN:
        raise PlanError(f"order {failing.order_id} is a {terms.payment_plan or 'payment without a plan'}, "
                        f"not an installment plan ({copecart.BREAKDOWN}): no installments to continue")
    count = _required(terms.total_number_of_payments, "total_number_of_payments")
    if not 1 <= count <= MAX_INSTALLMENTS:
        raise PlanError(f"total_number_of_payments must be 1..{MAX_INSTALLMENTS}, got {count}")
    first = _required(terms.first_payment, "first_payment")
    following = _required(terms.next_payments, "next_payments") if count > 1 else first
    frequency = _required(terms.frequency, "frequency") if count > 1 else None
    for name, value in (("first_payment", first), ("next_payments", following)):
        if not value.is_positive:
            raise PlanError(f"{name} must be a positive amount, got {value}")

    def amount_of(number: int) -> Money:
        return first if number == 1 else following

    return count, amount_of, frequency, _required(terms.order_date, "order_date")


def _distinct(events: list[SeenIpn]) -> list[SeenIpn]:
    """Each (kind, transaction) once, sorted so that the first problem reported does not depend on arrival."""
    unique: dict[tuple[SeenKind, str], SeenIpn] = {}
    for event in events:
        key = (event.kind, event.transaction_id)
        known = unique.setdefault(key, event)
        if known != event:
            raise PlanError(f"transaction {event.transaction_id} ({event.kind.value}) was seen twice with "
                            "different contents")
    return sorted(unique.values(), key=lambda e: (e.rate_number, e.kind.value, e.transaction_id))


def _check(event: SeenIpn, failing: SeenIpn, count: int, amount_of: _AmountOf) -> None:
    """Rule 3: the event belongs to this order and plan, and moves exactly its installment's amount."""
    where = f"transaction {event.transaction_id} ({event.kind.value})"
    if event.order_id != failing.order_id:
        raise PlanError(f"{where} is for order {event.order_id}, not {failing.order_id}")
    if event.amount.currency != failing.amount.currency:
        raise PlanError(f"{where} is in {event.amount.currency}, the order in {failing.amount.currency}: "
                        "mixed currencies")
    for term in dataclasses.fields(PlanTerms):
        theirs, ours = getattr(event.terms, term.name), getattr(failing.terms, term.name)
        if theirs is not None and ours is not None and theirs != ours:
            raise PlanError(f"{where} gives {term.name} {_shown(theirs)}, the failed payment "
                            f"{failing.transaction_id} {_shown(ours)}")
    if not 1 <= event.rate_number <= count:
        raise PlanError(f"{where} is for installment {event.rate_number}, beyond the plan's {count}")
    expected = amount_of(event.rate_number)
    moved = event.amount
    if event.kind in (SeenKind.REFUNDED, SeenKind.CHARGED_BACK):
        moved = Money(abs(moved.minor), moved.currency)
    elif not moved.is_positive:
        raise PlanError(f"{where} is for {moved}: a payment must be a positive amount")
    if moved != expected:
        raise PlanError(f"{where} is for {event.amount}, but installment {event.rate_number} of the plan is "
                        f"{expected}: the amounts do not add up")


def _required(value: _T | None, name: str) -> _T:
    if value is None:
        raise PlanError(f"the failed payment does not carry {name}, needed to rebuild the plan")
    return value


def _installments(numbers: Collection[int]) -> str:
    listed = ", ".join(str(n) for n in numbers)
    return f"installment {listed}" if len(numbers) == 1 else f"installments {listed}"


def _shown(value: object) -> str:
    return str(value.value) if isinstance(value, Frequency) else str(value)


def _text(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise PlanError(f"{name} is required, a non-empty string; got {value!r}")
    return value


def _optional_text(fields: Mapping[str, Any], name: str) -> str | None:
    return None if fields.get(name) is None else _text(fields, name)


def _optional(fields: Mapping[str, Any], name: str, read: Callable[[object, str], _T]) -> _T | None:
    value = fields.get(name)
    return None if value is None else read(value, name)


def _whole(value: object, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _WHOLE_NUMBER.fullmatch(value.strip()):
        number = int(value.strip())
    else:
        raise PlanError(f"{name} must be a whole number, got {value!r}")
    if not 1 <= number <= MAX_INSTALLMENTS:
        raise PlanError(f"{name} must be 1..{MAX_INSTALLMENTS}, got {number}")
    return number


def _currency(fields: Mapping[str, Any]) -> str:
    currency = _text(fields, "transaction_currency")
    try:
        exponent(currency)
    except MoneyError as exc:
        raise PlanError(f"transaction_currency: {exc}") from None
    return currency


def _money(value: object, currency: str, name: str) -> Money:
    if isinstance(value, str) and len(value) > copecart.MAX_AMOUNT_TEXT:
        raise PlanError(f"{name} is longer than {copecart.MAX_AMOUNT_TEXT} characters")
    try:
        return Money.parse(value, currency)
    except MoneyError as exc:
        raise PlanError(f"{name}: {exc}") from None


def _date(value: object, name: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise PlanError(f"{name} must be a date (YYYY-MM-DD), got {value!r}") from None
