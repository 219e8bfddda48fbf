"""Every sample IPN read into the domain's events, and the bodies and fields that are refused."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from domain.events import BREAKDOWN, CHARGED_BACK, FAILED, MADE, RECURRING_CANCELLED, REFUNDED, IpnFieldError
from domain.money import Money
from platforms.digistore24.ipn import ConnectionTest, DigistoreIpn, dedup_key, parse_ipn, read_form
from platforms.digistore24.signature import verify

SAMPLES = Path(__file__).resolve().parents[2] / "fixtures" / "digistore24" / "ipn"
PASSPHRASE = "test-ipn-passphrase"
CASE_ID = "3f9a1c2b7d4e5f60"


def body(name: str) -> bytes:
    return (SAMPLES / f"{name}.form").read_bytes()


def received(name: str) -> DigistoreIpn | ConnectionTest:
    """What the webhook will do: read the form, check the signature, parse."""
    fields = read_form(body(name))
    assert verify(fields, PASSPHRASE)
    return parse_ipn(fields)


def order_event(name: str) -> DigistoreIpn:
    ipn = received(name)
    assert isinstance(ipn, DigistoreIpn)
    return ipn


def eur(text: str) -> Money:
    return Money.parse(text, "EUR")


# name: (event_type, order_id, rate_number, amount, acted_on, starts_dunning)
EXPECTED: dict[str, tuple[str, str, int | None, Money | None, bool, bool]] = {
    "on_payment_installment_2": (MADE, "K7ZQ2M4P", 2, eur("50.00"), True, False),
    "on_payment_missed_installment_3": (FAILED, "K7ZQ2M4P", 3, None, True, True),
    "on_payment_missed_by_buyer": ("on_payment_missed", "K7ZQ2M4P", None, None, False, False),
    "on_payment_missed_by_operator": ("on_payment_missed", "K7ZQ2M4P", None, None, False, False),
    "on_payment_missed_subscription": (FAILED, "K7ZQ2M4P", 4, None, True, False),
    "on_refund_installment_1": (REFUNDED, "K7ZQ2M4P", 1, eur("-50.00"), True, False),
    "on_chargeback_installment_2": (CHARGED_BACK, "K7ZQ2M4P", 2, eur("-50.00"), True, False),
    "on_rebill_cancelled": (RECURRING_CANCELLED, "K7ZQ2M4P", 2, None, True, False),
    "on_rebill_resumed": ("on_rebill_resumed", "K7ZQ2M4P", None, None, False, False),
    "last_paid_day": ("last_paid_day", "K7ZQ2M4P", None, None, False, False),
    "on_payment_buy_url_installments": (MADE, "R5TW8N2X", 1, eur("50.00"), True, False),
    "on_payment_buy_url_single": (MADE, "W2QX9B6L", None, eur("200.00"), True, False),
    "on_affiliation": ("on_affiliation", "", None, None, False, False),
}


def test_every_sample_has_an_expectation() -> None:
    assert sorted(p.stem for p in SAMPLES.glob("*.form")) == sorted([*EXPECTED, "connection_test"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_becomes_the_domain_event(name: str) -> None:
    event_type, order_id, rate, amount, acted_on, starts_dunning = EXPECTED[name]

    event = order_event(name).event

    assert (event.event_type, event.order_id, event.rate_number, event.amount) == (event_type, order_id, rate, amount)
    assert (event.acted_on, event.starts_dunning) == (acted_on, starts_dunning)


def test_the_connection_test_is_recognised_and_is_no_order_event() -> None:
    assert received("connection_test") == ConnectionTest(merchant_id="39499382")


def test_a_missed_installment_carries_what_the_case_needs() -> None:
    ipn = order_event("on_payment_missed_installment_3")

    assert ipn.event.payment_plan == BREAKDOWN
    assert (ipn.digistore_event, ipn.billing_type, ipn.billing_stop_reason) == ("on_payment_missed", "installment",
                                                                                  None)
    assert (ipn.buyer_email, ipn.product_id, ipn.product_name) == ("anna.meier@example.com", "512345",
                                                                   "Coaching Programm")
    assert (ipn.number_of_installments, ipn.first_amount, ipn.other_amounts, ipn.billing_interval) == (
        6, eur("50.00"), eur("50.00"), "1_month")
    assert ipn.tracking is None


@pytest.mark.parametrize("name", ["on_payment_buy_url_installments", "on_payment_buy_url_single"])
def test_a_payment_through_dunlinks_link_names_its_case(name: str) -> None:
    ipn = order_event(name)

    assert ipn.tracking == CASE_ID
    assert ipn.event.event_type == MADE


def test_a_stopped_rebilling_is_no_failed_payment_whatever_the_reason_field_says_next() -> None:
    """Only an empty reason or a payment failure makes a missed payment a failed one."""
    fields = read_form(body("on_payment_missed_installment_3"))
    outcomes = {reason: parse_ipn({**fields, "billing_stop_reason": reason}) for reason in (
        "by_payment_denial", "pay_alias_invalid", "by_refund", "by_chargeback", "upgraded", "unknown", "new_reason")}

    dunned = {reason for reason, ipn in outcomes.items()
              if isinstance(ipn, DigistoreIpn) and ipn.event.starts_dunning}
    assert dunned == {"by_payment_denial", "pay_alias_invalid"}


def test_dedup_uses_the_transaction_id_or_else_the_exact_body() -> None:
    paid, missed = body("on_payment_installment_2"), body("on_payment_missed_installment_3")

    assert dedup_key(read_form(paid), paid) == "3999940"
    assert dedup_key(read_form(missed), missed) == "sha256:" + hashlib.sha256(missed).hexdigest()


@pytest.mark.parametrize(("raw", "field", "problem"), [
    (b"event=on_payment&order_id=A&order_id=B", "order_id", "sent more than once"),
    (b"event=on_payment&order_id=%FF", "body", "must be UTF-8"),
    (b"event=on_payment&order_id=\xc3", "body", "must be UTF-8"),
    (b"event=on_payment&items[0]=x", "items[0]", "not a Digistore24 field name"),
    (b"event=on_payment&a.b=x", "a.b", "not a Digistore24 field name"),
    (b"event=on_payment&=x", "body", "not a Digistore24 field name"),
    (b"event=on_payment&orphan", "body", "not a form-encoded body"),
    (b"&".join(b"f%d=1" % i for i in range(1001)), "body", "more than 1000 fields"),
])
def test_a_malformed_body_is_refused_naming_the_culprit(raw: bytes, field: str, problem: str) -> None:
    with pytest.raises(IpnFieldError) as caught:
        read_form(raw)
    assert (caught.value.field, str(caught.value)) == (field, f"{field}: {problem}")


def test_plus_and_percent_escapes_are_decoded_once() -> None:
    assert read_form(b"custom=a+b%2Bc&note=Line1%0ALine2&empty=") == {"custom": "a b+c", "note": "Line1\nLine2",
                                                                       "empty": ""}


def _missed(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = read_form(body("on_payment_missed_installment_3"))
    fields.update(changes)
    return {k: v for k, v in fields.items() if v is not None}


@pytest.mark.parametrize(("fields", "field"), [
    (_missed(event=None), "event"),
    (_missed(event="x" * 65), "event"),
    (_missed(order_id=None), "order_id"),
    (_missed(order_id=""), "order_id"),
    (_missed(order_id="A\x00B"), "order_id"),
    (_missed(order_id="A" * 129), "order_id"),
    (_missed(pay_sequence_no=None), "pay_sequence_no"),
    (_missed(pay_sequence_no="0"), "pay_sequence_no"),
    (_missed(pay_sequence_no="three"), "pay_sequence_no"),
    (_missed(pay_sequence_no="١"), "pay_sequence_no"),
    (_missed(number_of_installments="-6"), "number_of_installments"),
    (_missed(first_amount="50,00"), "first_amount"),
    (_missed(currency="XXX"), "currency"),
    (_missed(transaction_id="T\x00"), "transaction_id"),
    (_missed(custom=7), "custom"),
])
def test_a_missed_installment_without_usable_fields_is_refused(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(IpnFieldError) as caught:
        parse_ipn(fields)
    assert caught.value.field == field


@pytest.mark.parametrize(("changes", "field"), [
    ({"transaction_amount": None}, "transaction_amount"),
    ({"transaction_currency": None}, "transaction_currency"),
    ({"transaction_amount": "50.005"}, "transaction_amount"),
    ({"transaction_amount": "1" * 33}, "transaction_amount"),
    ({"transaction_currency": "ZZZ"}, "transaction_currency"),
])
def test_a_payment_without_its_amount_is_refused(changes: dict[str, Any], field: str) -> None:
    fields: dict[str, Any] = {**read_form(body("on_payment_installment_2")), **changes}
    fields = {k: v for k, v in fields.items() if v is not None}

    with pytest.raises(IpnFieldError) as caught:
        parse_ipn(fields)
    assert caught.value.field == field


def test_an_event_dunlink_does_not_act_on_needs_no_order_fields() -> None:
    ipn = parse_ipn({"event": "eticket", "eticket_id": "17", "pay_sequence_no": "n/a", "first_amount": "?"})

    assert isinstance(ipn, DigistoreIpn)
    assert (ipn.event.event_type, ipn.event.order_id, ipn.event.acted_on) == ("eticket", "", False)


def test_fields_only_a_missed_installment_relies_on_do_not_stop_a_payment() -> None:
    fields = {**read_form(body("on_payment_installment_2")), "first_amount": "50,00", "number_of_installments": "?"}

    ipn = parse_ipn(fields)

    assert isinstance(ipn, DigistoreIpn) and ipn.event.amount == eur("50.00")
    assert (ipn.first_amount, ipn.number_of_installments) == (None, None)


@pytest.mark.parametrize("name", ["payment.made", "payment.failed", "payment.recurring.cancelled"])
def test_a_domain_event_name_is_no_digistore24_event(name: str) -> None:
    with pytest.raises(IpnFieldError) as caught:
        parse_ipn({**read_form(body("on_payment_installment_2")), "event": name})
    assert caught.value.field == "event"
