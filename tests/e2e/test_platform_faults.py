"""The platform half down (50% 503, 10% timeouts, seeded): every case still ends as without faults, and no
effect happens twice. Retries come from the database through the relay, with the case's own backoff."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.stack import Stack, eventually, order_json

ORDERS = [f"CC-60{n:02d}" for n in range(1, 6)]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # the slowest scenario: one backend
def test_under_platform_faults_each_case_completes_with_one_order_and_one_cancel(stack: Stack) -> None:
    for n, order_id in enumerate(ORDERS):
        stack.seed(order_json(order_id, email=f"buyer{n}@example.com"))
    stack.faults(error_rate=0.5, error_status=503, timeout_rate=0.1, seed=20260901)
    for order_id in ORDERS:
        assert stack.fail(order_id, 3)["delivery"]["body"] == "OK"

    def all_awaiting() -> bool:
        states = {c.original_order_id: c.state.value for c in stack.cases()}
        assert "needs_person" not in states.values(), [(c.id, c.reason) for c in stack.cases()]
        return len(states) == len(ORDERS) and set(states.values()) == {"awaiting_payment"}

    eventually(all_awaiting, timeout=150, what="every case to reach the buyer despite the faults")
    eventually(stack.settled, what="no work left in Redis or the inbox")
    log = stack.requests()
    stack.clear_faults()  # the checks below read orders through the same faulty API

    faults = Counter(r.get("fault") for r in log)
    assert faults["error"] > 0
    assert faults["timeout"] > 0
    created = Counter(r["idempotency_key"] for r in log if r.get("effect") == "created")
    assert len(created) == len(ORDERS)
    assert set(created.values()) == {1}
    cancelled = sorted(r["path"] for r in log if r.get("effect") == "cancelled")
    assert cancelled == [f"/v1/orders/{order_id}/cancel" for order_id in ORDERS]

    cases = {c.original_order_id: c for c in stack.cases()}
    for order_id in ORDERS:
        [replacement] = stack.replacements(order_id)
        assert cases[order_id].replacement_order_id == replacement["id"]
        assert stack.order(order_id)["status"] == "cancelled"
    by_case = Counter(m.message["X-Dunlink-Case"] for m in stack.mail.messages)
    assert by_case == Counter({case.id: 1 for case in cases.values()})
