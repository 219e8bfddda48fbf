"""A case over days, with time moved by ``dunlink due --now``: reminders, the final notice and expiry."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.stack import Stack, eventually, order_json


def _mail_for(stack: Stack, case_id: str) -> list[str]:
    """Message-IDs of every email the mail server received for the case, in order of arrival."""
    return [str(m.message["Message-ID"]) for m in stack.mail.messages if m.message["X-Dunlink-Case"] == case_id]


@pytest.mark.postgres
def test_reminders_final_notice_and_expiry_and_a_paid_case_gets_no_more_email(stack: Stack) -> None:
    stack.seed(order_json("CC-1001"))
    stack.seed(order_json("CC-1002", email="ben@example.com", first_name="Ben"))
    for order in ("CC-1001", "CC-1002"):
        stack.fail(order, 3)
    lapsing = eventually(lambda: stack.case_in("CC-1001", "awaiting_payment"), what="the first link")
    paying = eventually(lambda: stack.case_in("CC-1002", "awaiting_payment"), what="the second link")
    assert lapsing.link_sent_at is not None
    sent = lapsing.link_sent_at
    stack.mail.wait_for(2)

    stack.due(sent + timedelta(days=1))
    assert len(_mail_for(stack, lapsing.id)) == 1

    stack.due(sent + timedelta(days=3, minutes=1))
    stack.mail.wait_for(4)
    assert _mail_for(stack, lapsing.id)[1] == f"<dunlink.{lapsing.id}.reminder_1@dunlink.example>"
    assert len(_mail_for(stack, paying.id)) == 2
    reminder = next(m for m in stack.mail.messages if m.message["Message-ID"] == _mail_for(stack, lapsing.id)[1])
    assert lapsing.payment_url is not None
    assert lapsing.payment_url in reminder.text
    assert "200,00 €" in reminder.text

    assert paying.replacement_order_id is not None
    stack.pay(paying.replacement_order_id, 1)  # day 5: the buyer pays the replacement
    eventually(lambda: stack.case_in("CC-1002", "recovered"), what="the payment to be recorded")

    assert "emails sent: 0" in stack.due(sent + timedelta(days=3, minutes=2))  # the same day again: nothing
    stack.due(sent + timedelta(days=7, minutes=1))
    stack.due(sent + timedelta(days=13, minutes=1))
    stack.mail.wait_for(6)
    assert _mail_for(stack, lapsing.id)[2:] == [f"<dunlink.{lapsing.id}.reminder_2@dunlink.example>",
                                                f"<dunlink.{lapsing.id}.final_notice@dunlink.example>"]
    assert stack.order(lapsing.replacement_order_id or "")["status"] == "active"

    stack.due(sent + timedelta(days=14, minutes=1))
    assert stack.order(lapsing.replacement_order_id or "")["status"] == "cancelled"
    assert stack.case_in("CC-1001", "lost") is not None
    cancels = [r for r in stack.requests() if r["path"] == f"/v1/orders/{lapsing.replacement_order_id}/cancel"]
    assert [r.get("effect") for r in cancels if r["status"] == 200] == ["cancelled"]

    # The paid case got its link and its first reminder, and nothing after the payment.
    assert len(_mail_for(stack, paying.id)) == 2
    assert stack.order(paying.replacement_order_id)["status"] != "cancelled"
    stack.due(sent + timedelta(days=20))
    assert len(_mail_for(stack, lapsing.id)) == 4
