"""A vendor who makes replacements by hand, through the pipeline's use cases on a real database and a real SMTP
server: the plan rebuilt from the stored IPNs, the task email, the vendor's actions, the buyer's email only
after both, and the buyer's payment on the hand-made order matched by buyer and product."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.email.capture import MailCatcher
from domain.case import CaseState, DunningCase
from dunlink.config.settings import Settings
from dunlink.runtime.bootstrap import Services, build_services
from dunlink.usecases.pipeline import advance_case, handle_event, send_email
from dunlink.usecases.vendor_actions import Answer, confirm_paid, give_link, original_cancelled
from tests.support.stack import SECRET, SECRET_KEY
from tests.support.vendors import vendors_toml

T = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parents[2] / "fixtures" / "copecart"
LINK = "http://127.0.0.1:8090/pay/CC-900001"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def pipeline(database_url: str, tmp_path: Path) -> Iterator[tuple[Services, Clock, MailCatcher]]:
    (tmp_path / "vendors.toml").write_text(vendors_toml({"hooli": SECRET}), encoding="utf-8")
    mail = MailCatcher(tmp_path / "mail").start()
    settings = Settings(database_url=database_url, vendors_file=tmp_path / "vendors.toml", secret_key=SECRET_KEY,
                        smtp_url=f"smtp://127.0.0.1:{mail.port}", mail_from="dunning@dunlink.example",
                        public_url="https://dunning.example.com")
    clock = Clock(T)
    built = dataclasses.replace(build_services(settings, enqueue=lambda *_: None), clock=clock)
    try:
        yield built, clock, mail
    finally:
        built.engine.dispose()
        mail.stop()


def _ipn(event_type: str, rate: int, *, order_id: str = "CC-1001", transaction: str | None = None,
         **fields: Any) -> dict[str, Any]:
    """The fixture's IPN of installment ``rate`` (3 of 6, 50.00 EUR each) as another event of the same order."""
    body = json.loads((FIXTURES / "payment_failed_breakdown.json").read_text())
    body.update(event_type=event_type, order_id=order_id, rate_number=str(rate),
                transaction_id=transaction or f"T-{order_id}-{event_type}-{rate}",
                payment_status="paid" if event_type == "payment.made" else "failed", **fields)
    return body


def _deliver(services: Services, body: dict[str, Any]) -> str:
    with services.uow() as uow:
        stored = uow.inbox.add(vendor="hooli", event_type=body["event_type"], dedup_key=body["transaction_id"],
                               order_id=body["order_id"], body=json.dumps(body), now=services.clock())
        uow.commit()
    return handle_event(services, stored.id).outcome


def _case(services: Services, order_id: str = "CC-1001") -> DunningCase:
    with services.uow() as uow:
        case = uow.cases.latest_for_order("hooli", order_id)
    assert case is not None
    return case


def test_the_plan_comes_from_the_ipns_the_vendor_is_tasked_and_the_buyer_emailed_only_after_both(
        pipeline: tuple[Services, Clock, MailCatcher]) -> None:
    services, clock, mail = pipeline
    assert _deliver(services, _ipn("payment.made", 1)) == "no_case"
    assert _deliver(services, _ipn("payment.made", 2)) == "no_case"
    assert _deliver(services, _ipn("payment.failed", 3)) == "case_opened"
    case = _case(services)
    assert advance_case(services, case.id) == "planned"
    case = _case(services)
    assert [i.amount.minor for i in case.replacement.installments] == [5000] * 4  # type: ignore[union-attr]
    assert send_email(services, case.id) == "send_vendor_task_sent"
    [task] = mail.wait_for(1)
    assert task.rcpt_tos == ("tasks@hooli.example",)
    assert "https://dunning.example.com/vendor/cases/" in task.text
    assert _case(services).state is CaseState.AWAITING_VENDOR_LINK

    assert give_link(services, case.id, "https://evil.example/pay").answer is Answer.REFUSED
    assert give_link(services, case.id, LINK, order_id="CC-900001").answer is Answer.RECORDED
    assert give_link(services, case.id, LINK).answer is Answer.UNCHANGED
    assert send_email(services, case.id) == "awaiting_original_cancel"  # a reminder is not due yet
    assert len(mail.messages) == 1

    assert original_cancelled(services, case.id, by="vendor_page").answer is Answer.RECORDED
    assert send_email(services, case.id) == "send_link_sent"
    buyer = mail.wait_for(2)[1]
    assert buyer.rcpt_tos == ("anna@example.com",) and LINK in buyer.text
    assert give_link(services, case.id, LINK + "?again").answer is Answer.CONFLICT

    # The buyer pays the order the vendor made: matched by its id, given with the link.
    clock.now += timedelta(days=1)
    assert _deliver(services, _ipn("payment.made", 1, order_id="CC-900001", transaction="T-new-1")) == "recovered"
    assert _case(services).state is CaseState.RECOVERED


def test_a_payment_on_an_order_whose_id_was_not_given_is_matched_by_buyer_and_product(
        pipeline: tuple[Services, Clock, MailCatcher]) -> None:
    services, _clock, _mail = pipeline
    for body in (_ipn("payment.made", 1), _ipn("payment.made", 2), _ipn("payment.failed", 3)):
        _deliver(services, body)
    case_id = _case(services).id
    advance_case(services, case_id)
    send_email(services, case_id)
    give_link(services, case_id, LINK)
    original_cancelled(services, case_id, by="cli")
    send_email(services, case_id)
    assert _case(services).state is CaseState.AWAITING_PAYMENT

    stranger = _ipn("payment.made", 1, order_id="CC-555", transaction="T-555", buyer_email="someone@example.com")
    assert _deliver(services, stranger) == "no_case"
    paid = _ipn("payment.made", 1, order_id="CC-900002", transaction="T-900002", buyer_email="ANNA@example.com")
    assert _deliver(services, paid) == "recovered"
    case = _case(services)
    assert case.state is CaseState.RECOVERED and case.replacement_order_id == "CC-900002"


def test_installments_never_seen_go_to_a_person_until_confirmed_paid(
        pipeline: tuple[Services, Clock, MailCatcher]) -> None:
    services, _clock, mail = pipeline
    _deliver(services, _ipn("payment.made", 2))
    _deliver(services, _ipn("payment.failed", 3))  # nothing was seen of installment 1
    case_id = _case(services).id
    assert advance_case(services, case_id) == "needs_person"
    case = _case(services)
    assert case.reason_code == "installments_unseen" and case.reason_params == {"installments": "1"}
    assert mail.messages == []  # nothing asked of the vendor

    assert confirm_paid(services, case_id, (1,)).answer is Answer.RECORDED
    assert advance_case(services, case_id) == "planned"
    assert _case(services).outstanding_minor == 20000


def test_the_failed_installment_paid_meanwhile_closes_the_case_before_the_vendor_is_asked(
        pipeline: tuple[Services, Clock, MailCatcher]) -> None:
    services, _clock, mail = pipeline
    for body in (_ipn("payment.made", 1), _ipn("payment.made", 2), _ipn("payment.failed", 3)):
        _deliver(services, body)
    case_id = _case(services).id
    _deliver(services, _ipn("payment.made", 3))
    assert _case(services).state is CaseState.RESOLVED
    assert advance_case(services, case_id) in ("busy_or_gone", "resolved")
    assert mail.messages == []
