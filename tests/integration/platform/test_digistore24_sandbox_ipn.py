"""The sandbox's Digistore24 IPNs as a webhook receives them: form-encoded, signed so that
``platforms.digistore24.signature`` verifies them, read by ``ipn.parse_ipn`` into the event dunlink acts on, and
carrying the fields of Digistore24's samples."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from domain.events import BREAKDOWN, FAILED, MADE, RECURRING_CANCELLED, PaymentEvent
from domain.money import Money
from dunlink.sandbox.digistore24 import Digistore24Sandbox
from dunlink.sandbox.state import SandboxState
from platforms.digistore24.ipn import DigistoreIpn, parse_ipn, read_form
from platforms.digistore24.signature import verify
from tests.integration.platform.conftest import Received, WebhookReceiver
from tests.integration.platform.digistore24_sandbox import (
    CASE_ID,
    KEY,
    OTHER_PASSPHRASE,
    PASSPHRASE,
    sample_fields,
    seed_body,
    serving,
    serving_sandbox,
)
from tests.support.stack import eventually

EUR = "EUR"


@pytest.fixture(scope="module")
def sandbox_app(webhook_receiver: WebhookReceiver) -> Iterator[str]:
    with serving_sandbox(webhook_receiver.url) as url:
        yield url


@pytest.fixture
def ds24(sandbox_app: str, webhook_receiver: WebhookReceiver) -> Iterator[httpx.Client]:
    """The sandbox's controls, after a reset, with purchase K7ZQ2M4P seeded for vendor acme."""
    with httpx.Client(base_url=sandbox_app, timeout=10) as control:
        control.post("/sandbox/reset").raise_for_status()
        webhook_receiver.received.clear()
        webhook_receiver.status = 200
        assert control.post("/sandbox/digistore24/purchases", json=seed_body()).status_code == 201
        yield control


def received_ipn(delivery: Received) -> tuple[dict[str, str], DigistoreIpn]:
    """What the webhook will do with a delivery: read the form, check the signature, parse."""
    assert delivery.headers["content-type"] == "application/x-www-form-urlencoded"
    fields = read_form(delivery.body)
    assert verify(fields, PASSPHRASE)
    assert not verify(fields, OTHER_PASSPHRASE)
    ipn = parse_ipn(fields)
    assert isinstance(ipn, DigistoreIpn)
    return fields, ipn


def api(ds24: httpx.Client, function: str, **form: str) -> Any:
    answer = ds24.post(f"/api/call/{function}", data=form, headers={"X-DS-API-KEY": KEY}).json()
    assert answer["result"] == "success", answer
    return answer["data"]


def test_a_missed_installment_arrives_as_the_failed_payment_that_starts_dunning(
        ds24: httpx.Client, webhook_receiver: WebhookReceiver) -> None:
    answer = ds24.post("/sandbox/digistore24/purchases/K7ZQ2M4P/payments/3/missed")

    assert answer.status_code == 200
    assert answer.json()["delivery"] == {"url": f"{webhook_receiver.url}/webhooks/digistore24/acme", "status": 200,
                                         "body": "OK", "error": None}
    assert (answer.json()["purchase"]["billing_status"], answer.json()["purchase"]["missed_payments"]) == (
        "reminding", [3])
    (delivery,) = webhook_receiver.received
    assert delivery.path == "/webhooks/digistore24/acme"
    fields, ipn = received_ipn(delivery)
    assert ipn.event == PaymentEvent(FAILED, "K7ZQ2M4P", None, BREAKDOWN, 3, None)
    assert ipn.event.starts_dunning
    assert (ipn.billing_type, ipn.billing_stop_reason, ipn.number_of_installments, ipn.billing_interval) == (
        "installment", None, 6, "1_month")
    assert (ipn.first_amount, ipn.other_amounts) == (Money(5000, EUR), Money(5000, EUR))
    assert (ipn.buyer_email, ipn.product_id, ipn.tracking) == ("anna.meier@example.com", "512345", None)
    sample = sample_fields("on_payment_missed_installment_3")
    assert list(fields) == list(sample)
    assert fields["next_payment_at"] == sample["next_payment_at"] == "2026-10-01"


def test_a_paid_installment_arrives_as_a_payment_with_its_transaction(ds24: httpx.Client,
                                                                      webhook_receiver: WebhookReceiver) -> None:
    answer = ds24.post("/sandbox/digistore24/purchases/K7ZQ2M4P/payments/3/paid").json()

    assert (answer["purchase"]["payments"], answer["purchase"]["billing_status"]) == (3, "paying")
    fields, ipn = received_ipn(webhook_receiver.received[0])
    assert ipn.event.event_type == MADE
    assert (ipn.event.order_id, ipn.event.rate_number, ipn.event.amount) == ("K7ZQ2M4P", 3, Money(5000, EUR))
    assert ipn.event.transaction_id == str(answer["purchase"]["transactions"][2]["id"])
    assert set(fields) == set(sample_fields("on_payment_installment_2"))
    assert fields["next_payment_at"] == "2026-11-01"
    assert len(api(ds24, "getPurchase", purchase_id="K7ZQ2M4P")["transaction_list"]) == 3


def test_only_the_next_payment_can_be_paid_and_a_refusal_sends_nothing(ds24: httpx.Client,
                                                                       webhook_receiver: WebhookReceiver) -> None:
    skipped = ds24.post("/sandbox/digistore24/purchases/K7ZQ2M4P/payments/5/paid")
    beyond = ds24.post("/sandbox/digistore24/purchases/K7ZQ2M4P/payments/7/missed")
    unknown = ds24.post("/sandbox/digistore24/purchases/NOPE/payments/1/paid")

    assert (skipped.status_code, skipped.json()["error"]) == (409, "not_next_payment")
    assert (beyond.status_code, unknown.status_code) == (404, 404)
    assert webhook_receiver.received == []
    assert ds24.get("/sandbox/digistore24/purchases/K7ZQ2M4P").json()["payments"] == 2


def test_paying_the_last_installment_completes_the_purchase(ds24: httpx.Client,
                                                            webhook_receiver: WebhookReceiver) -> None:
    for number in range(3, 7):
        ds24.post(f"/sandbox/digistore24/purchases/K7ZQ2M4P/payments/{number}/paid").raise_for_status()

    fields, ipn = received_ipn(webhook_receiver.received[-1])
    assert (ipn.event.rate_number, fields["billing_status"], "next_payment_at" in fields) == (6, "completed", False)
    stop = api(ds24, "stopRebilling", purchase_id="K7ZQ2M4P", force="Y")
    assert (stop["modified"], stop["billing_status"], stop["rebilling_active"]) == ("N", "completed", "N")


def test_stopping_the_rebilling_sends_one_rebill_cancelled_and_a_later_miss_is_not_a_failure(
        ds24: httpx.Client, webhook_receiver: WebhookReceiver) -> None:
    api(ds24, "stopRebilling", purchase_id="K7ZQ2M4P", force="Y")
    api(ds24, "stopRebilling", purchase_id="K7ZQ2M4P", force="Y")

    (delivery,) = eventually(lambda: webhook_receiver.received, timeout=10, what="on_rebill_cancelled")
    fields, ipn = received_ipn(delivery)
    assert ipn.event == PaymentEvent(RECURRING_CANCELLED, "K7ZQ2M4P", None, BREAKDOWN, 2, None)
    assert (ipn.billing_stop_reason, fields["billing_status"]) == ("by_operator", "aborted")
    assert list(fields) == list(sample_fields("on_rebill_cancelled"))

    ds24.post("/sandbox/digistore24/purchases/K7ZQ2M4P/payments/3/missed").raise_for_status()
    fields, ipn = received_ipn(webhook_receiver.received[-1])
    assert (ipn.event.event_type, ipn.event.starts_dunning, ipn.billing_stop_reason) == (
        "on_payment_missed", False, "by_operator")
    assert list(fields) == list(sample_fields("on_payment_missed_by_operator"))
    assert len(webhook_receiver.received) == 2
    paid = ds24.post("/sandbox/digistore24/purchases/K7ZQ2M4P/payments/3/paid")
    assert (paid.status_code, paid.json()["error"]) == (409, "rebilling_stopped")


def make_link(ds24: httpx.Client, **plan: str) -> dict[str, Any]:
    form = {"product_id": "512345", "buyer[email]": "anna.meier@example.com", "buyer[first_name]": "Anna",
            "buyer[last_name]": "Meier", "buyer[country]": "DE", "buyer[readonly_keys]": "email_and_name",
            "tracking[custom]": CASE_ID, "valid_until": "72h", **{f"payment_plan[{k}]": v for k, v in plan.items()}}
    return api(ds24, "createBuyUrl", **form)  # type: ignore[no-any-return]


def test_paying_through_a_link_makes_a_new_purchase_whose_payment_carries_the_case_id(
        ds24: httpx.Client, webhook_receiver: WebhookReceiver) -> None:
    made = make_link(ds24, first_amount="50.00", other_amounts="50.00", currency=EUR, number_of_installments="4",
                     first_billing_interval="1_month", other_billing_intervals="1_month")

    answer = ds24.post(f"/sandbox/digistore24/buy-urls/{made['id']}/pay")

    assert answer.status_code == 201
    purchase = answer.json()["purchase"]
    assert purchase["id"] != "K7ZQ2M4P"
    assert (purchase["custom"], purchase["buy_url"], purchase["payments"], purchase["number_of_installments"]) == (
        CASE_ID, made["id"], 1, 4)
    fields, ipn = received_ipn(webhook_receiver.received[0])
    assert ipn.event == PaymentEvent(MADE, purchase["id"], fields["transaction_id"], BREAKDOWN, 1, Money(5000, EUR))
    assert ipn.tracking == CASE_ID
    assert list(fields) == list(sample_fields("on_payment_buy_url_installments"))
    assert [p["id"] for p in ds24.get("/sandbox/digistore24/purchases", params={"custom": CASE_ID}).json()] == [
        purchase["id"]]
    (stored,) = ds24.get("/sandbox/digistore24/buy-urls").json()
    assert stored["purchases"] == [purchase["id"]]
    assert api(ds24, "getPurchase", purchase_id=purchase["id"])["billing_status"] == "paying"


def test_paying_a_single_payment_link_completes_at_once(ds24: httpx.Client,
                                                        webhook_receiver: WebhookReceiver) -> None:
    made = make_link(ds24, first_amount="200.00", other_amounts="0.00", currency=EUR, number_of_installments="1")

    purchase = ds24.post(f"/sandbox/digistore24/buy-urls/{made['id']}/pay").json()["purchase"]

    assert (purchase["billing_type"], purchase["billing_status"], purchase["rebilling_active"]) == (
        "single_payment", "completed", False)
    fields, ipn = received_ipn(webhook_receiver.received[0])
    assert (ipn.event.event_type, ipn.event.rate_number, ipn.event.amount, ipn.tracking) == (
        MADE, None, Money(20000, EUR), CASE_ID)
    assert (fields["pay_sequence_no"], fields["billing_type"]) == ("0", "single_payment")
    assert list(fields) == list(sample_fields("on_payment_buy_url_single"))


def test_the_ipn_log_holds_each_delivery_as_sent(ds24: httpx.Client, webhook_receiver: WebhookReceiver) -> None:
    ds24.post("/sandbox/digistore24/purchases/K7ZQ2M4P/payments/3/missed").raise_for_status()
    webhook_receiver.status = 503
    ds24.post("/sandbox/digistore24/purchases/K7ZQ2M4P/payments/3/paid").raise_for_status()

    logged = ds24.get("/sandbox/ipns").json()
    assert [(i["platform"], i["event_type"], i["order_id"], i["status"]) for i in logged] == [
        ("digistore24", "on_payment_missed", "K7ZQ2M4P", 200), ("digistore24", "on_payment", "K7ZQ2M4P", 503)]
    assert [i["body"].encode() for i in logged] == [r.body for r in webhook_receiver.received]
    assert [i["signature"] for i in logged] == [read_form(r.body)["sha_sign"] for r in webhook_receiver.received]


def test_a_vendor_without_a_passphrase_is_refused_before_anything_changes(ds24: httpx.Client,
                                                                          webhook_receiver: WebhookReceiver) -> None:
    ds24.post("/sandbox/digistore24/purchases", json=seed_body(id="X1", vendor="initech")).raise_for_status()

    answer = ds24.post("/sandbox/digistore24/purchases/X1/payments/3/missed")

    assert (answer.status_code, answer.json()["error"]) == (422, "unknown_vendor")
    assert ds24.get("/sandbox/digistore24/purchases/X1").json()["missed_payments"] == []
    assert webhook_receiver.received == []


@pytest.mark.parametrize(("body", "status", "error"), [
    (seed_body(), 409, "purchase_exists"),
    (seed_body(id="A1", currency="XXX"), 422, "invalid_purchase"),
    (seed_body(id="A1", payments=7), 422, "invalid_purchase"),
    (seed_body(id="A1", first_amount="50.005"), 422, "invalid_purchase"),
    (seed_body(id="A1", billing_interval="monthly"), 422, "invalid_purchase"),
    (seed_body(id="A1", buyer={"first_name": "Anna"}), 422, "invalid_purchase"),
    (seed_body(id="A/1"), 422, "invalid_purchase"),
])
def test_a_seed_that_is_not_a_purchase_is_refused(ds24: httpx.Client, body: dict[str, Any], status: int,
                                                  error: str) -> None:
    answer = ds24.post("/sandbox/digistore24/purchases", json=body)

    assert (answer.status_code, answer.json()["error"]) == (status, error)
    assert [p["id"] for p in ds24.get("/sandbox/digistore24/purchases").json()] == ["K7ZQ2M4P"]


@pytest.mark.parametrize(("change", "code"), [
    ({"buyer[email]": ""}, 3), ({"buyer[country]": "Germany"}, 3), ({"valid_until": "7d"}, 3),
    ({"tracking[custom]": "x" * 64}, 3), ({"payment_plan[first_amount]": "50,00"}, 3),
    ({"payment_plan[other_billing_intervals]": "monthly"}, 3), ({"tracking[affiliate]": "someone"}, 4),
])
def test_create_buy_url_refuses_what_digistore24_refuses(ds24: httpx.Client, change: dict[str, str],
                                                         code: int) -> None:
    form = {"product_id": "512345", "buyer[email]": "anna.meier@example.com", "buyer[first_name]": "Anna",
            "buyer[last_name]": "Meier", "buyer[readonly_keys]": "email_and_name", "payment_plan[first_amount]": "50",
            "payment_plan[other_amounts]": "50", "payment_plan[number_of_installments]": "4", **change}

    answer = ds24.post("/api/call/createBuyUrl", data=form, headers={"X-DS-API-KEY": KEY}).json()

    assert (answer["result"], answer["code"]) == ("error", code)
    assert ds24.get("/sandbox/digistore24/buy-urls").json() == []


def test_reset_forgets_purchases_and_links(ds24: httpx.Client) -> None:
    made = make_link(ds24)

    ds24.post("/sandbox/reset").raise_for_status()

    assert ds24.get("/sandbox/digistore24/purchases").json() == []
    assert ds24.get("/sandbox/digistore24/buy-urls").json() == []
    assert ds24.get(made["url"]).status_code == 404
    gone = ds24.post("/api/call/getPurchase", data={"purchase_id": "K7ZQ2M4P"}, headers={"X-DS-API-KEY": KEY})
    assert (gone.json()["result"], gone.json()["code"]) == ("error", 4)


def test_an_expired_link_shows_so_and_cannot_be_paid() -> None:
    """Time travel needs the sandbox's clock, so this one drives the Digistore24 routes in process."""
    moment = [dt.datetime(2026, 10, 2, 8, 0, tzinfo=dt.UTC)]
    sandbox = Digistore24Sandbox(state=SandboxState(), webhook_base="http://127.0.0.1:9", api_keys={KEY: "acme"},
                                 passphrases={"acme": PASSPHRASE}, clock=lambda: moment[0],
                                 http=lambda: pytest.fail("an expired link delivers nothing"))
    with serving(Starlette(routes=sandbox.routes)) as url, httpx.Client(base_url=url, timeout=10) as ds24:
        ds24.post("/sandbox/digistore24/purchases", json=seed_body()).raise_for_status()
        made = api(ds24, "createBuyUrl", product_id="512345", **{"buyer[email]": "anna.meier@example.com"},
                   valid_until="2h")
        assert made["valid_until"] == "2026-10-02 10:00:00"
        assert made["url"] == f"{url}/ds24/buy/{made['id']}"

        moment[0] += dt.timedelta(hours=1, minutes=59)
        assert ds24.get(made["url"]).status_code == 200
        moment[0] += dt.timedelta(minutes=1)
        expired = ds24.get(made["url"])
        paid = ds24.post(f"/sandbox/digistore24/buy-urls/{made['id']}/pay")

    assert expired.status_code == 410 and "expired" in expired.text
    assert (paid.status_code, paid.json()["error"]) == (410, "link_expired")
    assert sandbox.purchases.by_id.keys() == {"K7ZQ2M4P"}
