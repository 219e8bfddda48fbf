"""One contract, two implementations: the in-memory platform must answer like the sandbox over HTTP."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from adapters.platform.http import HttpPlatform
from adapters.platform.memory import InMemoryPlatform
from adapters.platform.port import (
    NewOrder,
    Order,
    OrderCompleted,
    OrderNotFound,
    PlatformPort,
    Rejected,
    Unauthorized,
)
from tests.integration.platform.conftest import TOKEN
from tests.support.sandbox import replacement_for, sample_order


@dataclass
class Harness:
    platform: PlatformPort
    seed: Callable[[Order], None]
    orders_replacing: Callable[[str], list[Order]]
    with_wrong_token: Callable[[], PlatformPort]


@pytest.fixture(params=["memory", "sandbox"])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    if request.param == "memory":
        memory = InMemoryPlatform()

        def revoked() -> PlatformPort:
            other = InMemoryPlatform()
            other.revoke_token()
            return other

        yield Harness(memory, memory.seed, memory.orders_replacing, revoked)
        return
    base: str = request.getfixturevalue("sandbox")
    control = httpx.Client(base_url=base, timeout=10)

    def seed(order: Order) -> None:
        control.post("/sandbox/orders", json=order.to_json()).raise_for_status()

    def orders_replacing(order_id: str) -> list[Order]:
        answer = control.get("/sandbox/orders", params={"replaces": order_id})
        answer.raise_for_status()
        return [Order.from_json(o) for o in answer.json()]

    with HttpPlatform(base, TOKEN) as client, HttpPlatform(base, "not-the-token") as wrong, control:
        yield Harness(client, seed, orders_replacing, lambda: wrong)


def test_get_answers_the_seeded_order(harness: Harness) -> None:
    harness.seed(sample_order("CC-1001", product_name="Coaching <Program>"))

    order = harness.platform.get_order("CC-1001")

    assert order == dataclasses.replace(sample_order("CC-1001", product_name="Coaching <Program>"),
                                        payment_url=order.payment_url)
    assert order.payment_url is not None
    assert order.payment_url.endswith("/pay/CC-1001")


def test_get_unknown_order_is_not_found(harness: Harness) -> None:
    with pytest.raises(OrderNotFound):
        harness.platform.get_order("CC-404")


def test_create_makes_an_active_order_with_a_payment_link(harness: Harness) -> None:
    original = sample_order("CC-1001")
    harness.seed(original)
    wanted = replacement_for(original)

    created = harness.platform.create_order(wanted, idempotency_key="case-1:replace")

    assert created.status == "active"
    assert created.replaces == "CC-1001"
    assert created.id != "CC-1001"
    assert (created.vendor, created.product_id, created.buyer, created.currency, created.plan) == (
        wanted.vendor, wanted.product_id, wanted.buyer, wanted.currency, wanted.plan)
    assert created.product_name == original.product_name
    assert created.payment_url is not None
    assert created.payment_url.endswith(f"/pay/{created.id}")
    assert harness.platform.get_order(created.id) == created
    assert harness.orders_replacing("CC-1001") == [created]


def test_same_key_same_body_returns_the_same_order_and_makes_no_second(harness: Harness) -> None:
    original = sample_order("CC-1001")
    harness.seed(original)

    first = harness.platform.create_order(replacement_for(original), idempotency_key="case-1:replace")
    again = harness.platform.create_order(replacement_for(original), idempotency_key="case-1:replace")

    assert again == first
    assert harness.orders_replacing("CC-1001") == [first]


def test_different_keys_make_different_orders(harness: Harness) -> None:
    original = sample_order("CC-1001")
    harness.seed(original)

    first = harness.platform.create_order(replacement_for(original), idempotency_key="k-1")
    second = harness.platform.create_order(replacement_for(original), idempotency_key="k-2")

    assert first.id != second.id
    assert len(harness.orders_replacing("CC-1001")) == 2


def test_same_key_with_another_body_is_rejected(harness: Harness) -> None:
    original = sample_order("CC-1001")
    harness.seed(original)
    harness.platform.create_order(replacement_for(original), idempotency_key="case-1:replace")

    with pytest.raises(Rejected) as caught:
        harness.platform.create_order(replacement_for(original, amount=1), idempotency_key="case-1:replace")

    assert (caught.value.status, caught.value.code) == (422, "idempotency_key_reused")
    assert len(harness.orders_replacing("CC-1001")) == 1


def test_cancel_answers_the_cancelled_order(harness: Harness) -> None:
    harness.seed(sample_order("CC-1001"))

    cancelled = harness.platform.cancel_order("CC-1001", reason="replaced", idempotency_key="case-1:cancel")

    assert cancelled.status == "cancelled"
    assert harness.platform.get_order("CC-1001").status == "cancelled"


@pytest.mark.parametrize("second_key", ["case-1:cancel", "another-key"])
def test_cancelling_twice_is_success(harness: Harness, second_key: str) -> None:
    harness.seed(sample_order("CC-1001"))
    first = harness.platform.cancel_order("CC-1001", reason="replaced", idempotency_key="case-1:cancel")

    again = harness.platform.cancel_order("CC-1001", reason="replaced", idempotency_key=second_key)

    assert again == first


def test_cancelling_a_completed_order_is_its_own_result(harness: Harness) -> None:
    harness.seed(sample_order("CC-1001", status="completed", paid=6))

    with pytest.raises(OrderCompleted):
        harness.platform.cancel_order("CC-1001", reason="replaced", idempotency_key="case-1:cancel")

    assert harness.platform.get_order("CC-1001").status == "completed"


def test_cancelling_an_unknown_order_is_not_found(harness: Harness) -> None:
    with pytest.raises(OrderNotFound):
        harness.platform.cancel_order("CC-404", reason="replaced", idempotency_key="case-1:cancel")


def test_a_wrong_token_is_unauthorized_on_every_call(harness: Harness) -> None:
    original = sample_order("CC-1001")
    harness.seed(original)
    platform = harness.with_wrong_token()

    calls: list[Callable[[], Order]] = [
        lambda: platform.get_order("CC-1001"),
        lambda: platform.create_order(replacement_for(original), idempotency_key="k"),
        lambda: platform.cancel_order("CC-1001", reason="replaced", idempotency_key="c"),
    ]
    for call in calls:
        with pytest.raises(Unauthorized):
            call()
    assert harness.orders_replacing("CC-1001") == []


def test_an_invalid_new_order_is_rejected(harness: Harness) -> None:
    original = sample_order("CC-1001")
    harness.seed(original)
    bad: NewOrder = dataclasses.replace(replacement_for(original), currency="XXX")

    with pytest.raises(Rejected) as caught:
        harness.platform.create_order(bad, idempotency_key="k")

    assert caught.value.status == 422
    assert harness.orders_replacing("CC-1001") == []
