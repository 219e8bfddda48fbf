"""A payment.failed IPN is acted on only once the platform agrees the installment is unpaid (failed, or open
and due); time is moved with ``dunlink due --now``."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

from domain.case import DunningCase
from platforms.copecart.webhook import signature
from tests.support.stack import SECRET, Stack, eventually, order_json

FIXTURE = Path(__file__).parents[1] / "fixtures" / "copecart" / "payment_failed_breakdown.json"


def _failed_ipn(stack: Stack, order_id: str, installment: int) -> None:
    """The IPN CopeCart sends when an installment failed, delivered whatever the platform's order shows."""
    fields = json.loads(FIXTURE.read_text(encoding="utf-8"))
    fields.update(order_id=order_id, transaction_id=f"T-FAIL-{order_id}", rate_number=str(installment))
    body = json.dumps(fields).encode("utf-8")
    answer = stack.deliver("acme", body, signature(SECRET, body))
    assert (answer.status_code, answer.text) == (200, "OK")


def _waiting(stack: Stack, order_id: str) -> DunningCase | None:
    """The order's case once it has looked at the platform and is waiting for it to agree."""
    case = stack.case_in(order_id, "open")
    return case if case and any(e.kind == "installment_not_failed" for e in stack.timeline(case.id)) else None


def test_an_installment_the_platform_shows_paid_or_not_yet_due_is_never_acted_on(stack: Stack) -> None:
    stack.seed(order_json("CC-7001", paid=3))
    not_due = order_json("CC-7002", email="ben@example.com")
    due_on = date.today() + timedelta(days=30)
    not_due["plan"]["installments"][4]["due_date"] = due_on.isoformat()
    stack.seed(not_due)
    _failed_ipn(stack, "CC-7001", 3)
    _failed_ipn(stack, "CC-7002", 5)

    # Paid on the platform: nothing is owed for it, and the case closes having done nothing.
    paid = eventually(lambda: stack.case_in("CC-7001", "resolved"), what="CC-7001 to close")
    assert [e.kind for e in stack.timeline(paid.id)] == ["opened", "original_paid"]
    # Open and not due: the IPN may be ahead of the platform; dunlink looks again, for an hour.
    waiting = eventually(lambda: _waiting(stack, "CC-7002"), what="CC-7002 to wait for the platform")

    stack.due(waiting.opened_at + timedelta(minutes=59))  # looked at again: still not failed, still waiting
    assert stack.case_in("CC-7002", "open") is not None

    stack.due(waiting.opened_at + timedelta(hours=1, minutes=1))
    person = stack.case_in("CC-7002", "needs_person")
    assert person is not None
    assert person.reason == (f"the platform shows installment 5 as open and due on {due_on.isoformat()}, not "
                             "failed, an hour after the payment.failed IPN: nothing was done; check the order")

    assert [r for r in stack.requests() if r["method"] == "POST"] == []
    assert [stack.order(order)["status"] for order in ("CC-7001", "CC-7002")] == ["active", "active"]
    assert stack.mail.messages == []
