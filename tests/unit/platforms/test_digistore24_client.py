"""DigistoreClient against Digistore24's recorded answers (httpx.MockTransport): what it sends, what it reads,
and how every failure lands in the platform error tree."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from adapters.platform.errors import (
    MalformedResponse,
    OrderCompleted,
    OrderNotFound,
    PlatformError,
    PlatformTimeout,
    PlatformUnavailable,
    RateLimited,
    Rejected,
    Unauthorized,
)
from adapters.platform.port import Buyer, Order
from domain.money import Money
from domain.plans import Frequency, Installment, InstallmentPlan, InstallmentStatus
from platforms.digistore24.client import DigistoreClient, RebillingStillActive
from platforms.digistore24.links import NewBuyUrl
from platforms.digistore24.plans import UnsupportedPlan
from platforms.digistore24.purchase import UnsupportedPurchase

ANSWERS = Path(__file__).resolve().parents[2] / "fixtures" / "digistore24" / "api"
KEY = "1234567-AbCdEfGhIjKlMnOpQrStUvWxYz"
NOW = dt.datetime(2026, 10, 2, 8, 0, 3, tzinfo=dt.UTC)
BUYER = Buyer(id="333222", email="anna.meier@example.com", first_name="Anna", last_name="Meier", country_code="DE")


def recorded(name: str, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=(ANSWERS / f"{name}.json").read_bytes(),
                          headers={"Content-Type": "application/json"})


def client(answers: list[httpx.Response | Exception], seen: list[httpx.Request],
           waits: list[float] | None = None, **options: Any) -> DigistoreClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    recorded_waits: list[float] = [] if waits is None else waits
    return DigistoreClient(KEY, vendor="acme", base_url="http://ds24.test", transport=httpx.MockTransport(handle),
                           sleep=recorded_waits.append, **options)


def form(request: httpx.Request) -> dict[str, str]:
    return dict(parse_qsl(request.content.decode(), keep_blank_values=True, strict_parsing=True))


def plan(*amounts: str, frequency: Frequency | None = Frequency.MONTHLY) -> InstallmentPlan:
    return InstallmentPlan("EUR", frequency, tuple(
        Installment(n, Money.parse(a, "EUR"), NOW.date(), InstallmentStatus.OPEN)
        for n, a in enumerate(amounts, start=1)))


def link(owed: InstallmentPlan, *, expires_at: dt.datetime = NOW + dt.timedelta(days=29, hours=1, minutes=30)
         ) -> NewBuyUrl:
    return NewBuyUrl(product_id="512345", buyer=BUYER, plan=owed, tracking="3f9a1c2b7d4e5f60", expires_at=expires_at)


# -- getPurchase ------------------------------------------------------------------------------------------


def test_get_purchase_posts_the_id_with_the_key_in_the_header() -> None:
    seen: list[httpx.Request] = []
    client([recorded("get_purchase_installment")], seen).get_purchase("K7ZQ2M4P")

    (request,) = seen
    assert (request.method, request.url.path) == ("POST", "/api/call/getPurchase")
    assert request.headers["X-DS-API-KEY"] == KEY
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form(request) == {"purchase_id": "K7ZQ2M4P"}
    assert KEY not in request.content.decode()


def test_a_purchase_becomes_the_order_the_pipeline_knows() -> None:
    order = client([recorded("get_purchase_installment")], []).get_order("K7ZQ2M4P", frequency=Frequency.MONTHLY)

    assert order == Order.parse({
        "id": "K7ZQ2M4P", "vendor": "acme", "status": "active",
        "product": {"id": "512345", "name": "Coaching Programm"},
        "buyer": {"id": "333222", "email": "anna.meier@example.com", "first_name": "Anna", "last_name": "Meier",
                  "country_code": "DE"},
        "currency": "EUR",
        "plan": {"kind": "installments", "frequency": "monthly", "installments": [
            {"number": n, "amount": 5000, "due_date": due, "status": "paid" if n <= 2 else "open"}
            for n, due in enumerate(["2026-08-01", "2026-09-01", "2026-10-01", "2026-11-01", "2026-12-01",
                                     "2027-01-01"], start=1)]},
        "payment_url": None, "replaces": None,
    })


def test_the_answer_keyed_by_id_with_numbers_for_amounts_reads_the_same() -> None:
    first = client([recorded("get_purchase_installment")], []).get_purchase("K7ZQ2M4P")
    second = client([recorded("get_purchase_keyed_by_id")], []).get_purchase("K7ZQ2M4P")

    assert first == second
    assert second.first_amount == Money(5000, "EUR")


def test_digistore24s_documented_example_is_read_but_its_refund_is_not_guessed() -> None:
    purchase = client([recorded("get_purchase_documented_example")], []).get_purchase("L4F5DWT5")

    assert (purchase.id, purchase.billing_type, purchase.order_status, purchase.product_id) == (
        "L4F5DWT5", "single_payment", "cancelled", "20")
    assert [(t.kind, t.amount) for t in purchase.transactions] == [("payment", Money(1000, "EUR")),
                                                                   ("refund", Money(-1000, "EUR"))]
    with pytest.raises(UnsupportedPurchase, match="refund"):
        purchase.to_order(vendor="acme", frequency=None)


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"billing_type": "subscription"}, UnsupportedPurchase, "subscription"),
    ({"items": [{"product_id": 1, "product_name": "a"}, {"product_id": 2, "product_name": "b"}]},
     UnsupportedPurchase, "2 order items"),
    ({"number_of_installments": 1}, MalformedResponse, "2 payments for 1 installments"),
    ({"billing_status": "frozen"}, MalformedResponse, "billing_status"),
    ({"amount": 50.505}, MalformedResponse, "amount"),
    ({"currency": "XXX"}, MalformedResponse, "XXX"),
    ({"buyer": {"id": 1, "email": "not-an-address", "first_name": "A", "last_name": "M", "country": "DE"}},
     MalformedResponse, "buyer.email"),
])
def test_a_purchase_dunlink_cannot_read_without_guessing_is_refused(change: dict[str, Any],
                                                                   error: type[PlatformError], match: str) -> None:
    document = json.loads((ANSWERS / "get_purchase_installment.json").read_text())
    document["data"].update(change)
    answer = httpx.Response(200, json=document)

    with pytest.raises(error, match=match):
        client([answer], []).get_order("K7ZQ2M4P", frequency=Frequency.MONTHLY)


def test_an_answer_about_another_purchase_is_malformed() -> None:
    with pytest.raises(MalformedResponse, match="answered purchase K7ZQ2M4P"):
        client([recorded("get_purchase_installment")], []).get_purchase("K7ZQ2M4Q")


def test_an_installment_plan_without_its_interval_is_refused() -> None:
    with pytest.raises(UnsupportedPurchase, match="billing interval"):
        client([recorded("get_purchase_installment")], []).get_order("K7ZQ2M4P", frequency=None)


# -- createBuyUrl -----------------------------------------------------------------------------------------


def test_the_link_asks_for_the_remaining_installments_with_buyer_tracking_and_validity() -> None:
    seen: list[httpx.Request] = []
    made = client([recorded("create_buy_url")], seen).create_buy_url(link(plan("50.00", "50.00", "50.00", "50.00")),
                                                                     now=NOW)

    assert seen[0].url.path == "/api/call/createBuyUrl"
    assert form(seen[0]) == {
        "product_id": "512345",
        "payment_plan[first_amount]": "50.00", "payment_plan[other_amounts]": "50.00",
        "payment_plan[currency]": "EUR", "payment_plan[number_of_installments]": "4",
        "payment_plan[first_billing_interval]": "1_month", "payment_plan[other_billing_intervals]": "1_month",
        "buyer[email]": "anna.meier@example.com", "buyer[first_name]": "Anna", "buyer[last_name]": "Meier",
        "buyer[country]": "DE", "buyer[readonly_keys]": "email_and_name",
        "tracking[custom]": "3f9a1c2b7d4e5f60", "valid_until": "697h",
    }
    assert (made.id, made.url) == ("342033068", "https://www.checkout-ds24.com/product/512345/342033068/vzJd5b3qByzt")
    assert made.valid_until == NOW + dt.timedelta(hours=697)
    assert made.valid_until_text == "2026-10-31 09:00:03"


def test_a_single_payment_link_asks_for_one_payment_of_everything_owed() -> None:
    seen: list[httpx.Request] = []
    client([recorded("create_buy_url")], seen).create_buy_url(link(plan("200.00", frequency=None)), now=NOW)

    sent = form(seen[0])
    assert {k: v for k, v in sent.items() if k.startswith("payment_plan")} == {
        "payment_plan[first_amount]": "200.00", "payment_plan[other_amounts]": "0.00",
        "payment_plan[currency]": "EUR", "payment_plan[number_of_installments]": "1"}


@pytest.mark.parametrize(("owed", "expires_at", "error"), [
    (plan("100.00", "50.00", "60.00"), NOW + dt.timedelta(days=5), UnsupportedPlan),
    (InstallmentPlan("EUR", None, (Installment(1, Money(5000, "EUR"), NOW.date(), InstallmentStatus.PAID),)),
     NOW + dt.timedelta(days=5), UnsupportedPlan),
    (plan("50.00", "50.00"), NOW + dt.timedelta(minutes=59), ValueError),
])
def test_a_link_that_cannot_be_expressed_is_refused_before_any_call(owed: InstallmentPlan, expires_at: dt.datetime,
                                                                    error: type[Exception]) -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(error):
        client([], seen).create_buy_url(link(owed, expires_at=expires_at), now=NOW)
    assert seen == []


def test_an_answer_without_a_web_address_is_malformed() -> None:
    answer = httpx.Response(200, json={"api_version": "1.2", "result": "success", "data": {"id": 1, "url": "nope"}})
    with pytest.raises(MalformedResponse, match="url"):
        client([answer], []).create_buy_url(link(plan("50.00", "50.00")), now=NOW)


# -- stopRebilling ----------------------------------------------------------------------------------------


def test_stop_rebilling_forces_the_stop_and_reports_it() -> None:
    seen: list[httpx.Request] = []
    stop = client([recorded("stop_rebilling_stopped")], seen).stop_rebilling("K7ZQ2M4P")

    assert form(seen[0]) == {"purchase_id": "K7ZQ2M4P", "force": "Y"}
    assert (stop.modified, stop.rebilling_active, stop.code) == (True, False, "stopped_now")


def test_stopping_a_stopped_rebilling_is_success_that_changed_nothing() -> None:
    stop = client([recorded("stop_rebilling_already_stopped")], []).stop_rebilling("K7ZQ2M4P")

    assert (stop.modified, stop.rebilling_active) == (False, False)


def test_a_rebilling_that_runs_on_is_for_a_person() -> None:
    with pytest.raises(RebillingStillActive, match="stopped_later"):
        client([recorded("stop_rebilling_later")], []).stop_rebilling("K7ZQ2M4P")


def test_a_purchase_paid_in_full_is_completed() -> None:
    with pytest.raises(OrderCompleted):
        client([recorded("stop_rebilling_completed")], []).stop_rebilling("K7ZQ2M4P")


# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "on_purchase", "elsewhere", "code"), [
    ("error_bad_api_key", Unauthorized, Unauthorized, None),
    ("error_permission_denied", Unauthorized, Unauthorized, None),
    ("error_not_found", OrderNotFound, Rejected, "DS_ERR_NOT_FOUND"),
    ("error_bad_function_params", Rejected, Rejected, "DS_ERR_BAD_FUNCTION_PARAMS"),
    ("error_bad_api_call", Rejected, Rejected, "DS_ERR_BAD_API_CALL"),
    ("error_unknown", Rejected, Rejected, "DS_ERR_UNKNOWN"),
])
def test_each_error_code_is_permanent_and_raised_at_once(answer: str, on_purchase: type[PlatformError],
                                                         elsewhere: type[PlatformError], code: str | None) -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(on_purchase):
        client([recorded(answer)], seen).get_purchase("K7ZQ2M4P")
    with pytest.raises(elsewhere) as caught:
        client([recorded(answer)], seen).create_buy_url(link(plan("50.00", "50.00")), now=NOW)
    assert len(seen) == 2
    if code is not None:
        assert isinstance(caught.value, Rejected)
        assert (caught.value.status, caught.value.code) == (200, code)


@pytest.mark.parametrize(("answer", "expected", "code"), [
    ("error_bad_api_key", Unauthorized, None),
    ("error_permission_denied", Unauthorized, None),
    ("error_not_found", OrderNotFound, None),
    ("error_bad_function_params", Rejected, "DS_ERR_BAD_FUNCTION_PARAMS"),
    ("error_unknown", Rejected, "DS_ERR_UNKNOWN"),
])
def test_each_error_code_of_stop_rebilling_is_permanent(answer: str, expected: type[PlatformError],
                                                        code: str | None) -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(expected) as caught:
        client([recorded(answer)], seen).stop_rebilling("K7ZQ2M4P")
    assert len(seen) == 1
    if code is not None:
        assert isinstance(caught.value, Rejected)
        assert caught.value.code == code


@pytest.mark.parametrize(("status", "expected"), [
    (401, Unauthorized), (403, Unauthorized), (404, OrderNotFound), (400, Rejected), (422, Rejected),
    (302, MalformedResponse),
])
def test_http_statuses_of_the_openapi_description_are_classified(status: int,
                                                                 expected: type[PlatformError]) -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(expected):
        client([httpx.Response(status, text="")], seen).stop_rebilling("K7ZQ2M4P")
    assert len(seen) == 1


@pytest.mark.parametrize("answer", [
    httpx.Response(200, text="<html>maintenance</html>"),
    httpx.Response(200, json={"result": "success"}),
    httpx.Response(200, json={"result": "maybe", "data": {}}),
    httpx.Response(200, json=["success"]),
])
def test_an_answer_outside_the_envelope_is_malformed(answer: httpx.Response) -> None:
    with pytest.raises(MalformedResponse):
        client([answer], []).get_purchase("K7ZQ2M4P")


@pytest.mark.parametrize(("blip", "expected"), [
    (lambda: httpx.Response(503, text="Service Unavailable"), PlatformUnavailable),
    (lambda: httpx.Response(500, json={"result": "error", "code": 0, "message": "x"}), PlatformUnavailable),
    (lambda: httpx.ConnectError("refused"), PlatformUnavailable),
    (lambda: httpx.ReadTimeout("slow"), PlatformTimeout),
    (lambda: httpx.ConnectTimeout("slow"), PlatformTimeout),
    (lambda: httpx.Response(408, text=""), PlatformTimeout),
])
def test_transient_failures_are_retried_then_raised(blip: Any, expected: type[PlatformError]) -> None:
    seen: list[httpx.Request] = []
    waits: list[float] = []
    with pytest.raises(expected):
        client([blip(), blip(), blip()], seen, waits).stop_rebilling("K7ZQ2M4P")
    assert len(seen) == 3
    assert len(waits) == 2 and all(0 <= w <= 1.0 for w in waits)


def test_a_blip_then_an_answer_succeeds() -> None:
    seen: list[httpx.Request] = []
    purchase = client([httpx.Response(503), httpx.ReadTimeout("slow"), recorded("get_purchase_installment")],
                      seen).get_purchase("K7ZQ2M4P")
    assert purchase.id == "K7ZQ2M4P"
    assert len(seen) == 3


def test_rate_limits_wait_as_asked_and_long_ones_go_to_the_pipeline() -> None:
    waits: list[float] = []
    short = httpx.Response(429, headers={"Retry-After": "2"})
    client([short, recorded("stop_rebilling_stopped")], [], waits).stop_rebilling("K7ZQ2M4P")
    assert waits == [2.0]

    seen: list[httpx.Request] = []
    with pytest.raises(RateLimited) as caught:
        client([httpx.Response(429, headers={"Retry-After": "120"})], seen).stop_rebilling("K7ZQ2M4P")
    assert caught.value.retry_after == 120.0
    assert len(seen) == 1


def test_the_client_refuses_an_empty_key_and_an_empty_purchase_id() -> None:
    with pytest.raises(ValueError, match="API key"):
        DigistoreClient(" ", vendor="acme")
    with pytest.raises(ValueError, match="purchase_id"):
        client([], []).stop_rebilling("")


def test_every_call_has_a_timeout() -> None:
    seen: list[httpx.Request] = []
    client([recorded("get_purchase_installment")], seen, connect_timeout=1.5, read_timeout=4.0).get_purchase("K7ZQ2M4P")

    assert seen[0].extensions["timeout"] == {"connect": 1.5, "read": 4.0, "write": 4.0, "pool": 4.0}
