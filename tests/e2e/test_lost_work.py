"""Work that Redis lost, or that a worker died holding, is found again in the database and done once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.stack import Stack, eventually, order_json, running_stack


@pytest.fixture
def stack_without_workers(database_url: str, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, database_url, workers=0) as running:
        yield running


def _effects(stack: Stack, effect: str) -> list[str]:
    return [r["path"] for r in stack.requests() if r.get("effect") == effect]


def test_a_worker_killed_mid_call_leaves_the_case_to_the_next_one(stack: Stack) -> None:
    stack.seed(order_json("CC-5001"))
    stack.faults(latency_ms=1500)
    assert stack.fail("CC-5001", 3)["delivery"]["status"] == 200

    # Kill the worker (and its pool) while it waits for the platform to create the replacement.
    eventually(lambda: any(r["path"] == "/v1/orders" and r["method"] == "POST" for r in stack.requests()),
               what="the create call to start")
    [worker] = [name for name in stack.group.processes if name.startswith("worker")]
    stack.group.processes[worker].kill()
    stack.group.stop(worker)
    stack.clear_faults()
    before = stack.case_for("CC-5001")
    assert before is not None
    assert before.state.value == "planned"

    stack.start_worker()
    case = eventually(lambda: stack.case_in("CC-5001", "awaiting_payment"), timeout=40,
                      what="the next worker to finish the case")
    [replacement] = stack.replacements("CC-5001")
    assert case.replacement_order_id == replacement["id"]
    assert _effects(stack, "created") == ["/v1/orders"]
    assert _effects(stack, "cancelled") == ["/v1/orders/CC-5001/cancel"]
    [mail] = stack.mail.messages
    assert replacement["payment_url"] in mail.text


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_redis_flushed_after_the_ipn_was_answered_loses_nothing(stack_without_workers: Stack) -> None:
    stack = stack_without_workers
    stack.seed(order_json("CC-5101"))
    delivery = stack.fail("CC-5101", 3)["delivery"]
    assert (delivery["status"], delivery["body"]) == (200, "OK")
    assert stack.queue_lengths()["dunlink.platform"] >= 1
    redis.Redis.from_url(stack.broker_url).flushdb()
    assert stack.queue_lengths() == {"dunlink.platform": 0, "dunlink.email": 0}

    stack.start_worker()
    case = eventually(lambda: stack.case_in("CC-5101", "awaiting_payment"), timeout=60,
                      what="the relay to recover the event")
    [event] = stack.inbox()
    assert (event.case_id, event.processed_at is not None) == (case.id, True)
    assert len(stack.replacements("CC-5101")) == 1
    assert _effects(stack, "cancelled") == ["/v1/orders/CC-5101/cancel"]
    assert len(stack.mail.messages) == 1
