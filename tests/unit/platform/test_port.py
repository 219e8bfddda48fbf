"""The order document: strict parsing at the boundary, exact round trips."""

from __future__ import annotations

import re
from typing import Any

import pytest

from adapters.platform.port import MalformedResponse, NewOrder, Order
from tests.support.sandbox import replacement_for, sample_order


def test_an_order_survives_the_round_trip() -> None:
    order = sample_order()
    assert Order.from_json(order.to_json()) == order


def test_a_new_order_survives_the_round_trip() -> None:
    new = replacement_for(sample_order())
    assert NewOrder.parse(new.to_json()) == new


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d.pop("buyer"), "buyer"),
    (lambda d: d.update(status="paused"), "status"),
    (lambda d: d["plan"]["installments"][0].update(amount="50.00"), "plan.installments[0].amount"),
    (lambda d: d["plan"]["installments"][1].update(amount=True), "plan.installments[1].amount"),
    (lambda d: d["plan"]["installments"][0].update(due_date="01.09.2026"), "plan.installments[0].due_date"),
    (lambda d: d["plan"].update(installments=[]), "plan.installments"),
    (lambda d: d["product"].pop("name"), "product.name"),
    (lambda d: d.update(currency="euro"), "currency"),
])
def test_a_bad_shape_is_malformed_and_names_the_field(change: Any, field: str) -> None:
    document = sample_order().to_json()
    change(document)

    with pytest.raises(MalformedResponse, match=re.escape(f"order: {field}:")):
        Order.from_json(document)


def test_a_non_object_is_malformed() -> None:
    with pytest.raises(MalformedResponse):
        Order.from_json(["CC-1"])
