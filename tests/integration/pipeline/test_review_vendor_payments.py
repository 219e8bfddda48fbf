"""The buyer's payment on an order the vendor made by hand, as the pipeline finds its case, on SQLite and
PostgreSQL: by the order id the vendor gave, else by vendor, buyer email and product. What must never happen:
the buyer asked to pay an order it has paid, another buyer's or another product's payment taken for the
replacement, a payment that fits several cases guessed."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.email.capture import MailCatcher
from domain.case import REASON_PAYMENT_AMBIGUOUS, CaseState, DunningCase
from dunlink.config.settings import Settings
from dunlink.runtime.bootstrap import Services, build_services
from dunlink.usecases.pipeline import advance_case, handle_event, send_email
from dunlink.usecases.vendor_actions import Answer, give_link, original_cancelled
from tests.support.stack import SECRET, SECRET_KEY
from tests.support.vendors import vendors_toml

T = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parents[2] / "fixtures" / "copecart"
LINK = "http://127.0.0.1:8090/pay/CC-900001"
BUYER = "anna@example.com"
TASKS = "tasks@hooli.example"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclasses.dataclass
class Pipeline:
    services: Services
    clock: Clock
    mail: MailCatcher

    def deliver(self, body: dict[str, Any], *, vendor: str = "hooli") -> str:
        with self.services.uow() as uow:
            stored = uow.inbox.add(vendor=vendor, event_type=body["event_type"], dedup_key=body["transaction_id"],
                                   order_id=body["order_id"], body=json.dumps(body), now=self.clock())
            uow.commit()
        return handle_event(self.services, stored.id).outcome

    def case(self, order_id: str = "CC-1001", *, vendor: str = "hooli") -> DunningCase:
        with self.services.uow() as uow:
            case = uow.cases.latest_for_order(vendor, order_id)
        assert case is not None
        return case

    def tasked(self, order_id: str = "CC-1001", *, vendor: str = "hooli", email: str = BUYER) -> str:
        """Installments 1 and 2 of 6 paid, 3 failed; the plan is made and the vendor has its task email."""
        for body in (ipn("payment.made", 1, order_id=order_id, buyer_email=email),
                     ipn("payment.made", 2, order_id=order_id, buyer_email=email),
                     ipn("payment.failed", 3, order_id=order_id, buyer_email=email)):
            self.deliver(body, vendor=vendor)
        case_id = self.case(order_id, vendor=vendor).id
        assert advance_case(self.services, case_id) == "planned"
        assert send_email(self.services, case_id) == "send_vendor_task_sent"
        return case_id

    def awaiting_payment(self, order_id: str = "CC-1001", *, vendor: str = "hooli", email: str = BUYER) -> str:
        """The vendor's part done (a link without the new order's id, the original cancelled), the buyer emailed."""
        case_id = self.tasked(order_id, vendor=vendor, email=email)
        assert give_link(self.services, case_id, LINK).answer is Answer.RECORDED
        assert original_cancelled(self.services, case_id, by="vendor_page").answer is Answer.RECORDED
        assert send_email(self.services, case_id) == "send_link_sent"
        assert self.case(order_id, vendor=vendor).state is CaseState.AWAITING_PAYMENT
        return case_id

    def buyer_emails(self) -> list[str]:
        return [m.text for m in self.mail.messages if TASKS not in m.rcpt_tos and "owner@" not in m.rcpt_tos[0]]


def ipn(event_type: str, rate: int, *, order_id: str = "CC-1001", transaction: str | None = None,
        **fields: Any) -> dict[str, Any]:
    """The fixture's IPN (anna@example.com, product p-42, 6 installments of 50.00 EUR) as another event."""
    body: dict[str, Any] = json.loads((FIXTURES / "payment_failed_breakdown.json").read_text())
    body.update(event_type=event_type, order_id=order_id, rate_number=str(rate),
                transaction_id=transaction or f"T-{order_id}-{event_type}-{rate}",
                payment_status="paid" if event_type == "payment.made" else "failed", **fields)
    return body


def new_order_paid(order_id: str, **fields: Any) -> dict[str, Any]:
    """The buyer's first payment on an order the vendor made with CopeCart's phone offer."""
    return ipn("payment.made", 1, order_id=order_id, transaction=f"T-{order_id}-1", **fields)


@pytest.fixture
def pipeline(database_url: str, tmp_path: Path) -> Iterator[Pipeline]:
    # A second vendor that makes its replacements by hand, with the same kind of buyers and products.
    umbrella = vendors_toml({"hooli": SECRET}).replace("[vendors.hooli]", "[vendors.umbrella]").replace(
        "tasks@hooli.example", "tasks@umbrella.example").replace("owner@hooli.example", "owner@umbrella.example")
    (tmp_path / "vendors.toml").write_text(vendors_toml({"hooli": SECRET}) + "\n" + umbrella, encoding="utf-8")
    mail = MailCatcher(tmp_path / "mail").start()
    settings = Settings(database_url=database_url, vendors_file=tmp_path / "vendors.toml", secret_key=SECRET_KEY,
                        smtp_url=f"smtp://127.0.0.1:{mail.port}", mail_from="dunning@dunlink.example",
                        public_url="https://dunning.example.com")
    clock = Clock(T)
    built = dataclasses.replace(build_services(settings, enqueue=lambda *_: None), clock=clock)
    try:
        yield Pipeline(built, clock, mail)
    finally:
        built.engine.dispose()
        mail.stop()


# -- defects: each of these fails on the code as it is ------------------------------------------------------


def test_the_buyer_paying_the_vendors_order_before_the_cancel_is_confirmed_is_not_asked_to_pay_it_again(
        pipeline: Pipeline) -> None:
    """CopeCart's own steps have the vendor send the new link to the buyer before cancelling the original, so
    the buyer may pay the new order while dunlink still waits for the cancellation. That payment fits this
    case by buyer and product (the vendor gave no order id); once the cancel is known the case is recovered and
    the buyer is not emailed a link to an order it has paid. Today the payment is stored as 'no_case' (only
    cases already awaiting payment are searched), and the buyer is then asked to pay."""
    case_id = pipeline.tasked()
    assert give_link(pipeline.services, case_id, LINK).answer is Answer.RECORDED
    pipeline.clock.now += timedelta(hours=1)

    assert pipeline.deliver(new_order_paid("CC-900001")) != "no_case"

    assert original_cancelled(pipeline.services, case_id, by="vendor_page").answer is Answer.RECORDED
    send_email(pipeline.services, case_id)
    case = pipeline.case()
    assert case.state is CaseState.RECOVERED and case.recovered_minor == 5000
    assert case.replacement_order_id == "CC-900001"
    assert pipeline.buyer_emails() == []


def test_a_payment_that_came_before_the_vendor_named_its_order_counts_once_the_order_is_named(
        pipeline: Pipeline) -> None:
    """The buyer paid the vendor's order before the vendor pasted its link; the vendor then gives the link with
    that order's id. The payment is stored: the case must count it rather than email the buyer a link to an order
    already paid (and at expiry tell the vendor to deactivate it and close the case as lost)."""
    case_id = pipeline.tasked()
    pipeline.deliver(new_order_paid("CC-900001"))

    assert give_link(pipeline.services, case_id, LINK, order_id="CC-900001").answer is Answer.RECORDED
    assert original_cancelled(pipeline.services, case_id, by="vendor_page").answer is Answer.RECORDED
    send_email(pipeline.services, case_id)

    case = pipeline.case()
    assert case.state is CaseState.RECOVERED and case.recovered_minor == 5000
    assert pipeline.buyer_emails() == []


def test_a_payment_that_names_no_product_is_not_taken_for_the_replacement(pipeline: Pipeline) -> None:
    """The contract matches by vendor, buyer email and product. A payment.made without product_id on another
    order of the same buyer (another of the vendor's products, say) must not mark the case recovered; today the
    product is simply left out of the match."""
    pipeline.awaiting_payment()
    other = new_order_paid("CC-777")
    del other["product_id"], other["product_name"]

    assert pipeline.deliver(other) == "no_case"
    assert pipeline.case().state is CaseState.AWAITING_PAYMENT and pipeline.case().recovered_minor == 0


def test_an_installment_of_another_original_order_of_the_same_buyer_and_product_is_not_the_replacement(
        pipeline: Pipeline) -> None:
    """The buyer holds two orders of the product (two seats, a second purchase); one is in dunning and waits for
    the buyer to pay the vendor's new order. The other order's next monthly installment is paid as usual: its
    IPN is an installment 4 of a plan of 6, nothing like the replacement of 4 the vendor was told to make. Today
    it is taken for the replacement's payment and the case closes as recovered (and every later installment
    of that order counts as recovery), while the real replacement is never paid and never followed up."""
    pipeline.awaiting_payment("CC-1001")
    assert pipeline.case().replacement is not None and len(pipeline.case().replacement.installments) == 4  # type: ignore[union-attr]

    assert pipeline.deliver(ipn("payment.made", 4, order_id="CC-2002")) == "no_case"
    case = pipeline.case()
    assert case.state is CaseState.AWAITING_PAYMENT and case.recovered_minor == 0
    assert case.replacement_order_id is None


def test_a_later_installment_paid_on_the_original_while_the_vendor_has_not_acted_is_not_asked_for_again(
        pipeline: Pipeline) -> None:
    """The vendor may take days or weeks to act, and CopeCart goes on charging the original meanwhile: installment 4
    is paid on it a month after 3 failed. The replacement the vendor was told to make still holds installment 4,
    so the buyer would pay it twice. The payment is ignored today (recorded as 'payment_ignored'); the plan must
    follow the IPNs seen or a person must look before the buyer is emailed."""
    case_id = pipeline.tasked()
    pipeline.clock.now += timedelta(days=31)
    pipeline.deliver(ipn("payment.made", 4))

    give_link(pipeline.services, case_id, LINK)
    original_cancelled(pipeline.services, case_id, by="vendor_page")
    send_email(pipeline.services, case_id)
    case = pipeline.case()
    # Installments 3, 5 and 6 are owed: 150.00, not the 200.00 planned before installment 4 was paid.
    assert case.state is CaseState.NEEDS_PERSON or case.outstanding_minor == 15000, (
        case.state, case.outstanding_minor)
    assert all("200,00" not in text for text in pipeline.buyer_emails())


# -- guarantees that hold ---------------------------------------------------------------------------------


def test_a_payment_for_another_product_of_the_same_buyer_is_not_the_replacement(pipeline: Pipeline) -> None:
    pipeline.awaiting_payment()
    assert pipeline.deliver(new_order_paid("CC-777", product_id="p-other", product_name="E-Book")) == "no_case"
    case = pipeline.case()
    assert case.state is CaseState.AWAITING_PAYMENT and case.replacement_order_id is None


def test_another_vendors_buyer_with_the_same_email_and_product_is_not_matched(pipeline: Pipeline) -> None:
    pipeline.awaiting_payment()
    assert pipeline.deliver(new_order_paid("CC-777"), vendor="umbrella") == "no_case"
    case = pipeline.case()
    assert case.state is CaseState.AWAITING_PAYMENT and case.replacement_order_id is None


@pytest.mark.parametrize("written", ["Anna@Example.COM", "ANNA@EXAMPLE.COM"])
def test_the_buyers_email_matches_whatever_its_case(pipeline: Pipeline, written: str) -> None:
    pipeline.awaiting_payment()
    assert pipeline.deliver(new_order_paid("CC-900001", buyer_email=written)) == "recovered"
    assert pipeline.case().state is CaseState.RECOVERED


def test_a_payment_that_fits_two_cases_goes_to_a_person_for_both_and_recovers_neither(pipeline: Pipeline) -> None:
    cases = [pipeline.tasked("CC-1001"), pipeline.tasked("CC-1002")]  # every IPN of both originals first
    for case_id in cases:
        give_link(pipeline.services, case_id, LINK)
        original_cancelled(pipeline.services, case_id, by="vendor_page")
        assert send_email(pipeline.services, case_id) == "send_link_sent"

    assert pipeline.deliver(new_order_paid("CC-900009")) == "payment_ambiguous"
    for order_id in ("CC-1001", "CC-1002"):
        case = pipeline.case(order_id)
        assert case.state is CaseState.NEEDS_PERSON and case.reason_code == REASON_PAYMENT_AMBIGUOUS
        assert case.recovered_minor == 0 and case.replacement_order_id is None


def test_the_named_order_is_found_by_its_id_even_with_another_buyer_email(pipeline: Pipeline) -> None:
    case_id = pipeline.tasked()
    give_link(pipeline.services, case_id, LINK, order_id="CC-900001")
    original_cancelled(pipeline.services, case_id, by="vendor_page")
    send_email(pipeline.services, case_id)
    assert pipeline.deliver(new_order_paid("CC-900001", buyer_email="anna.other@example.com")) == "recovered"


def test_a_second_installment_of_the_matched_order_adds_to_the_recovery(pipeline: Pipeline) -> None:
    pipeline.awaiting_payment()
    assert pipeline.deliver(new_order_paid("CC-900001")) == "recovered"
    second = ipn("payment.made", 2, order_id="CC-900001", transaction="T-CC-900001-2")
    assert pipeline.deliver(second) == "recovered"
    assert pipeline.case().recovered_minor == 10000


def test_the_original_cancelled_by_copecarts_ipn_before_the_link_lets_the_link_email_the_buyer_once(
        pipeline: Pipeline) -> None:
    case_id = pipeline.tasked()
    cancelled = ipn("payment.recurring.cancelled", 3, transaction="T-cancel")
    assert pipeline.deliver(cancelled).startswith("plan_cancelled")
    assert pipeline.case().original_known_cancelled and pipeline.case().state is CaseState.AWAITING_VENDOR_LINK
    assert pipeline.buyer_emails() == []

    give_link(pipeline.services, case_id, LINK)
    assert send_email(pipeline.services, case_id) == "send_link_sent"
    assert send_email(pipeline.services, case_id) == "awaiting_payment"
    [email] = pipeline.buyer_emails()
    assert LINK in email
