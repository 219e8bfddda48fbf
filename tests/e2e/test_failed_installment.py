"""A failed installment, end to end, through the real processes."""

from __future__ import annotations

import pytest

from tests.support.stack import Stack, eventually, order_json


def _awaiting(stack: Stack, order_id: str, vendor: str = "acme") -> object:
    case = stack.case_for(order_id, vendor)
    return case if case is not None and case.state.value == "awaiting_payment" else None


@pytest.mark.parametrize(("vendor", "kind"), [("acme", "remaining_installments"), ("globex", "single_payment")])
def test_installment_3_of_6_fails_and_the_buyer_gets_a_link(stack: Stack, vendor: str, kind: str) -> None:
    stack.seed(order_json("CC-1001", vendor=vendor))

    delivery = stack.fail("CC-1001", 3)["delivery"]
    assert (delivery["status"], delivery["body"]) == (200, "OK")
    eventually(lambda: _awaiting(stack, "CC-1001", vendor), what="the case to await payment")

    [replacement] = stack.replacements("CC-1001")
    amounts = [i["amount"] for i in replacement["plan"]["installments"]]
    if kind == "remaining_installments":
        assert amounts == [5000, 5000, 5000, 5000]
        assert replacement["plan"]["frequency"] == "monthly"
    else:
        assert amounts == [20000]
    assert replacement["buyer"]["email"] == "anna@example.com"
    assert replacement["replaces"] == "CC-1001"
    assert stack.order("CC-1001")["status"] == "cancelled"

    [mail] = stack.mail.wait_for(1)
    assert mail.rcpt_tos == ("anna@example.com",)
    assert replacement["payment_url"] in mail.text
    assert replacement["payment_url"] in mail.html
    owed = "200,00 €" if vendor == "acme" else "€200.00"
    assert owed in mail.text
    assert owed in mail.html
    case = stack.case_for("CC-1001", vendor)
    assert case is not None
    assert mail.message["X-Dunlink-Case"] == case.id
    assert "ACME Academy" in mail.message["From"] if vendor == "acme" else "Globex Courses" in mail.message["From"]
