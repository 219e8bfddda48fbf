"""CopeCart delivers the same IPN again and again, some copies at the same moment: one of each effect."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.support.stack import Stack, eventually, order_json


def test_the_same_ipn_ten_times_makes_one_case_one_order_one_cancel_one_email(stack: Stack) -> None:
    stack.seed(order_json("CC-2001"))
    first = stack.fail("CC-2001", 3)["delivery"]
    [ipn] = stack.ipns()
    body, signature = ipn["body"].encode("utf-8"), ipn["signature"]

    # Six copies at once while the worker is busy with the first, then three one after another.
    barrier = threading.Barrier(6)

    def deliver() -> httpx.Response:
        barrier.wait(timeout=10)
        return stack.deliver("acme", body, signature)

    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(lambda _: deliver(), range(6)))
    sequential = [stack.deliver("acme", body, signature) for _ in range(3)]

    answers = [(first["status"], first["body"])] + [(r.status_code, r.text) for r in concurrent + sequential]
    assert answers == [(200, "OK")] * 10

    case = eventually(lambda: stack.case_in("CC-2001", "awaiting_payment"), what="the case to await payment")
    eventually(stack.settled, what="no work left in Redis or the inbox")

    [stored] = stack.inbox()
    assert (stored.event_type, stored.order_id, stored.case_id) == ("payment.failed", "CC-2001", case.id)
    assert [c.id for c in stack.cases()] == [case.id]
    [replacement] = stack.replacements("CC-2001")
    assert case.replacement_order_id == replacement["id"]
    creates = [r for r in stack.requests() if r.get("effect") == "created"]
    cancels = [r for r in stack.requests() if r.get("effect") == "cancelled"]
    assert len(creates) == 1
    assert [r["path"] for r in cancels] == ["/v1/orders/CC-2001/cancel"]
    assert stack.order("CC-2001")["status"] == "cancelled"
    [mail] = stack.mail.messages
    assert mail.message["X-Dunlink-Case"] == case.id
    assert replacement["payment_url"] in mail.text
