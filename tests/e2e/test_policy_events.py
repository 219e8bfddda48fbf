"""The vendor's grace period, refunds and a cancelled plan, through signed IPNs to the running processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from platforms.copecart.webhook import signature
from tests.support.stack import SECRET, Stack, eventually, order_json

FIXTURES = Path(__file__).parents[1] / "fixtures" / "copecart"


def _ipn(stack: Stack, vendor: str, fixture: str, **fields: Any) -> None:
    body = json.loads((FIXTURES / fixture).read_text(encoding="utf-8"))
    body.update(fields)
    raw = json.dumps(body).encode()
    answer = stack.deliver(vendor, raw, signature(SECRET, raw))
    assert (answer.status_code, answer.text) == (200, "OK")


def _v1_calls(stack: Stack, order_id: str) -> list[dict[str, Any]]:
    return [r for r in stack.requests() if order_id in r["path"] or r["path"] == "/v1/orders"]


def test_within_the_grace_a_payment_closes_the_case_with_no_effect(stack: Stack) -> None:
    stack.seed(order_json("IN-1", vendor="initech"))
    stack.fail("IN-1", 3)
    opened = eventually(lambda: stack.case_in("IN-1", "open", "initech"), what="the case to open")
    stack.pay("IN-1", 3)  # the platform retried the card within the grace
    eventually(lambda: stack.case_in("IN-1", "resolved", "initech"), what="the case to close")
    stack.due(datetime.now(UTC) + timedelta(hours=25))
    assert _v1_calls(stack, "IN-1") == []
    assert stack.order("IN-1")["status"] == "active"
    assert [m for m in stack.mail.messages if m.message["X-Dunlink-Case"] == opened.id] == []


def test_after_the_grace_the_case_goes_on_with_a_refund_owed_again(stack: Stack) -> None:
    stack.seed(order_json("IN-2", vendor="initech"))
    stack.fail("IN-2", 3)
    case = eventually(lambda: stack.case_in("IN-2", "open", "initech"), what="the case to open")
    _ipn(stack, "initech", "payment_refunded_breakdown.json", order_id="IN-2", transaction_id="T-REFUND-IN-2",
         rate_number="1")
    eventually(lambda: any(e.kind == "refunded" for e in stack.timeline(case.id)), what="the refund on the case")
    assert stack.replacements("IN-2") == []

    stack.due(datetime.now(UTC) + timedelta(hours=25))
    [replacement] = stack.replacements("IN-2")
    assert [i["amount"] for i in replacement["plan"]["installments"]] == [10000, 5000, 5000, 5000]
    assert stack.case_in("IN-2", "awaiting_payment", "initech") is not None
    [mail] = [m for m in stack.mail.messages if m.message["X-Dunlink-Case"] == case.id]
    assert "€250.00" in mail.text


def test_a_refund_after_the_replacement_goes_to_a_person(stack: Stack) -> None:
    stack.seed(order_json("CC-7"))
    stack.fail("CC-7", 3)
    eventually(lambda: stack.case_in("CC-7", "awaiting_payment"), what="the link")
    _ipn(stack, "acme", "payment_refunded_breakdown.json", order_id="CC-7", transaction_id="T-REFUND-CC-7")
    case = eventually(lambda: stack.case_in("CC-7", "needs_person"), what="the case to go to a person")
    assert case.reason == "refund of installment 1 after the replacement was made: adjust the replacement by hand"


def test_a_plan_cancelled_within_the_grace_closes_the_case_without_a_replacement(stack: Stack) -> None:
    stack.seed(order_json("IN-3", vendor="initech"))
    stack.fail("IN-3", 3)
    eventually(lambda: stack.case_in("IN-3", "open", "initech"), what="the case to open")
    _ipn(stack, "initech", "payment_failed_breakdown.json", event_type="payment.recurring.cancelled",
         order_id="IN-3", transaction_id="T-CANCEL-IN-3")
    eventually(lambda: stack.case_in("IN-3", "resolved", "initech"), what="the case to close")
    stack.due(datetime.now(UTC) + timedelta(hours=25))
    assert stack.replacements("IN-3") == []
    assert stack.order("IN-3")["status"] == "active"
