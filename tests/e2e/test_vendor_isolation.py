"""One vendor's IPN secret acts on that vendor's orders only, through the running processes."""

from __future__ import annotations

import json
from pathlib import Path

from platforms.copecart.webhook import signature
from tests.support.stack import SECRET, Stack, eventually, order_json

FIXTURE = Path(__file__).parents[1] / "fixtures" / "copecart" / "payment_failed_breakdown.json"


def test_an_ipn_signed_by_one_vendor_for_another_vendors_order_has_no_effect(stack: Stack) -> None:
    stack.seed(order_json("CC-5001", vendor="acme"))
    fields = json.loads(FIXTURE.read_text(encoding="utf-8"))
    fields.update(order_id="CC-5001", transaction_id="T-GLOBEX-5001", rate_number="3")
    body = json.dumps(fields).encode("utf-8")

    # Signed with globex's secret (the stack's vendors share one) and sent to globex's URL: a valid delivery.
    answer = stack.deliver("globex", body, signature(SECRET, body))
    assert (answer.status_code, answer.text) == (200, "OK")

    case = eventually(lambda: stack.case_in("CC-5001", "needs_person", "globex"), what="the case to need a person")
    assert case.reason == ("the original order belongs to vendor 'acme', not 'globex' whose secret signed the IPN: "
                           "nothing was done; check who sent it")
    eventually(stack.settled, what="every event acted on")
    assert [(r["method"], r["path"]) for r in stack.requests()] == [("GET", "/v1/orders/CC-5001")]
    assert stack.replacements("CC-5001") == []
    assert stack.order("CC-5001")["status"] == "active"
    assert stack.case_for("CC-5001", "acme") is None
    assert stack.mail.messages == []

    warnings = [json.loads(line) for process in stack.group.processes.values() if process.name.startswith("worker")
                for line in process.log_text().splitlines() if '"vendor_mismatch"' in line]
    assert [(w["level"], w["order_vendor"], w["case_vendor"], w["order"]) for w in warnings] == [
        ("warning", "acme", "globex", "CC-5001")]
