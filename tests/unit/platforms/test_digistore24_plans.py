"""Digistore24's billing intervals in the domain's frequencies, and the pieces joined: a missed installment's
IPN and its purchase give the replacement, which the link asks for exactly."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from domain.plans import Frequency, InstallmentPlan, InstallmentStatus, PlanError, replacement_plan
from domain.policy import ReplacementKind
from platforms.digistore24.client import DigistoreClient
from platforms.digistore24.ipn import DigistoreIpn, parse_ipn, read_form
from platforms.digistore24.links import NewBuyUrl
from platforms.digistore24.plans import frequency_of, interval_of

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "digistore24"
NOW = dt.datetime(2026, 10, 2, 8, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize("frequency", list(Frequency))
def test_every_frequency_has_an_interval_that_reads_back(frequency: Frequency) -> None:
    assert frequency_of(interval_of(frequency)) is frequency


@pytest.mark.parametrize(("interval", "frequency"), [
    ("1_month", Frequency.MONTHLY), ("12_month", Frequency.YEARLY), ("7_day", Frequency.WEEKLY),
    ("1_week", Frequency.WEEKLY), ("1_year", Frequency.YEARLY), (" 3_MONTH ", Frequency.QUARTERLY),
])
def test_digistore24s_intervals_read_as_frequencies(interval: str, frequency: Frequency) -> None:
    assert frequency_of(interval) is frequency


@pytest.mark.parametrize(("interval", "why"), [
    ("2_month", "no dunlink schedule"), ("10_day", "no dunlink schedule"), ("10-day", "not a Digistore24"),
    ("monthly", "not a Digistore24"), ("", "not a Digistore24"),
])
def test_an_interval_dunlink_cannot_schedule_is_refused(interval: str, why: str) -> None:
    with pytest.raises(PlanError, match=why):
        frequency_of(interval)


@pytest.mark.parametrize(("kind", "expected"), [
    (ReplacementKind.REMAINING_INSTALLMENTS, {"payment_plan[first_amount]": "50.00",
                                              "payment_plan[other_amounts]": "50.00",
                                              "payment_plan[number_of_installments]": "4",
                                              "payment_plan[other_billing_intervals]": "1_month"}),
    (ReplacementKind.SINGLE_PAYMENT, {"payment_plan[first_amount]": "200.00",
                                      "payment_plan[other_amounts]": "0.00",
                                      "payment_plan[number_of_installments]": "1"}),
])
def test_a_missed_installment_becomes_a_link_for_exactly_what_is_owed(kind: ReplacementKind,
                                                                      expected: dict[str, str]) -> None:
    missed = parse_ipn(read_form((FIXTURES / "ipn" / "on_payment_missed_installment_3.form").read_bytes()))
    assert isinstance(missed, DigistoreIpn) and missed.event.rate_number == 3 and missed.billing_interval
    seen: list[httpx.Request] = []
    answers = [httpx.Response(200, content=(FIXTURES / "api" / f"{name}.json").read_bytes())
               for name in ("get_purchase_installment", "create_buy_url")]

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    ds24 = DigistoreClient("1-key", vendor="acme", base_url="http://ds24.test", transport=httpx.MockTransport(answer))

    original = ds24.get_order(missed.event.order_id, frequency=frequency_of(missed.billing_interval))
    plan = InstallmentPlan.from_order(original.to_json()).with_status(3, InstallmentStatus.FAILED)
    owed = replacement_plan(plan, kind=kind, failed_number=missed.event.rate_number, today=NOW.date())
    assert owed is not None
    ds24.create_buy_url(NewBuyUrl(product_id=original.product_id, buyer=original.buyer, plan=owed,
                                  tracking="3f9a1c2b7d4e5f60", expires_at=NOW + dt.timedelta(days=30)), now=NOW)

    sent = dict(parse_qsl(seen[1].content.decode()))
    assert {k: v for k, v in sent.items() if k in expected} == expected
    assert (sent["product_id"], sent["buyer[email]"], sent["valid_until"]) == ("512345", "anna.meier@example.com",
                                                                               "720h")
