"""Events and cases that can never succeed reach a person with the reason, at once and with no effect on the
platform, instead of failing on every try; through signed IPNs to the running processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from domain.case import CaseState
from platforms.copecart.webhook import signature
from tests.support.stack import SECRET, Stack, eventually, order_json

FIXTURES = Path(__file__).parents[1] / "fixtures" / "copecart"


def _ipn(stack: Stack, fixture: str, **fields: Any) -> None:
    body = json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))
    body.update(fields)
    raw = json.dumps(body).encode()
    answer = stack.deliver("acme", raw, signature(SECRET, raw))
    assert (answer.status_code, answer.text) == (200, "OK")


def _posts(stack: Stack) -> list[tuple[str, str]]:
    """The calls that would have an effect on the platform: creates and cancels."""
    return [(r["method"], r["path"]) for r in stack.requests() if r["method"] == "POST"]


@pytest.mark.parametrize(("currency", "amount", "reason"), [
    ("USD", "50.00", "a payment in USD on the replacement of a case in EUR: reconcile"),
    ("EUR", "-150.00", "a payment of -150.00 EUR on the replacement: payments must be positive; check it on the "
                       "platform"),
])
def test_a_payment_on_the_replacement_that_cannot_be_counted_goes_to_a_person(
        stack: Stack, currency: str, amount: str, reason: str) -> None:
    stack.seed(order_json("CC-6001"))
    stack.fail("CC-6001", 3)
    waiting = eventually(lambda: stack.case_in("CC-6001", "awaiting_payment"), what="the link")
    _ipn(stack, "payment_made_breakdown.json", order_id=waiting.replacement_order_id, transaction_id="T-PAID-6001",
         rate_number="1", transaction_currency=currency, transaction_amount=amount)

    case = eventually(lambda: stack.case_in("CC-6001", "needs_person"), what="the case to need a person")
    assert (case.reason, case.recovered_minor, case.failed_step) == (reason, 0, None)
    eventually(stack.settled, what="every event acted on, none left for the relay to send again")
    assert [row.outcome for row in stack.inbox()] == ["case_opened", "needs_person"]


def test_an_installment_beyond_the_plan_goes_to_a_person_with_no_effect(stack: Stack) -> None:
    stack.seed(order_json("CC-6002"))
    _ipn(stack, "payment_failed_breakdown.json", order_id="CC-6002", transaction_id="T-FAIL-6002", rate_number="9")

    case = eventually(lambda: stack.case_in("CC-6002", "needs_person"), what="the case to need a person")
    assert case.reason == ("the IPN names installment 9, but the original order has 6: nothing was done; "
                           "check the order")
    eventually(stack.settled, what="every event acted on")
    assert _posts(stack) == []
    assert stack.order("CC-6002")["status"] == "active"
    assert stack.mail.messages == []


def test_a_buyer_address_no_email_can_go_to_stops_the_case_before_the_original_is_cancelled(stack: Stack) -> None:
    stack.seed(order_json("CC-6003", email="anna@example..com"))
    stack.fail("CC-6003", 3)

    case = eventually(lambda: stack.case_in("CC-6003", "needs_person"), what="the case to need a person")
    assert case.reason == ("the payment link could not be emailed: InvalidAddressError: malformed address: not one "
                           "plain local@domain; nothing was done: correct it on the platform, then retry")
    assert (case.state, case.resume_state) == (CaseState.NEEDS_PERSON, CaseState.OPEN)
    eventually(stack.settled, what="every event acted on")
    assert _posts(stack) == []
    assert stack.replacements("CC-6003") == []
    assert stack.order("CC-6003")["status"] == "active"
    assert stack.mail.messages == []
