"""DigistoreClient over HTTP against the sandbox's Digistore24 side: what it reads, the links it makes, the stop it
asks for, and how faults and refusals land in the platform error tree. The same client tests also run against
Digistore24's recorded answers (tests/fixtures/digistore24/api), so the sandbox is held to them."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import httpx
import pytest

from adapters.platform.errors import (
    OrderNotFound,
    PlatformTimeout,
    PlatformUnavailable,
    RateLimited,
    Rejected,
    TransientPlatformError,
    Unauthorized,
)
from adapters.platform.port import Buyer, Order
from domain.money import Money
from domain.plans import Frequency, Installment, InstallmentPlan, InstallmentStatus
from platforms.digistore24.client import DigistoreClient
from platforms.digistore24.links import NewBuyUrl
from tests.integration.platform.conftest import WebhookReceiver
from tests.integration.platform.digistore24_sandbox import (
    CASE_ID,
    FIXTURES,
    KEY,
    OTHER_KEY,
    keys_of,
    seed_body,
    serving_sandbox,
)
from tests.support.stack import eventually

T = TypeVar("T")
BUYER = Buyer(id="333222", email="anna.meier@example.com", first_name="Anna", last_name="Meier", country_code="DE")
ANSWERS = FIXTURES / "api"


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


def client(base_url: str, key: str = KEY, *, waits: list[float] | None = None, **options: Any) -> DigistoreClient:
    recorded_waits: list[float] = [] if waits is None else waits
    return DigistoreClient(key, vendor="acme", base_url=base_url, sleep=recorded_waits.append, **options)


def owed(*amounts: str, frequency: Frequency | None = Frequency.MONTHLY) -> InstallmentPlan:
    today = dt.datetime.now(dt.UTC).date()
    return InstallmentPlan("EUR", frequency, tuple(
        Installment(n, Money.parse(a, "EUR"), today, InstallmentStatus.OPEN) for n, a in enumerate(amounts, start=1)))


def link(plan: InstallmentPlan, *, product_id: str = "512345", days: int = 14) -> NewBuyUrl:
    return NewBuyUrl(product_id=product_id, buyer=BUYER, plan=plan, tracking=CASE_ID,
                     expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=days, minutes=30))


def log(ds24: httpx.Client) -> list[dict[str, Any]]:
    return [r for r in ds24.get("/sandbox/requests").json() if r["path"].startswith("/api/call/")]


EXPECTED_ORDER = Order.parse({
    "id": "K7ZQ2M4P", "vendor": "acme", "status": "active", "product": {"id": "512345", "name": "Coaching Programm"},
    "buyer": {"id": "333222", "email": "anna.meier@example.com", "first_name": "Anna", "last_name": "Meier",
              "country_code": "DE"},
    "currency": "EUR",
    "plan": {"kind": "installments", "frequency": "monthly", "installments": [
        {"number": n, "amount": 5000, "due_date": due, "status": "paid" if n <= 2 else "open"}
        for n, due in enumerate(["2026-08-01", "2026-09-01", "2026-10-01", "2026-11-01", "2026-12-01",
                                 "2027-01-01"], start=1)]},
    "payment_url": None, "replaces": None,
})


# -- the same client tests, against the sandbox and against Digistore24's recorded answers ---------------------


def recorded_transport() -> httpx.MockTransport:
    """Digistore24 as its recorded answers show it, for purchase K7ZQ2M4P and the key ``KEY``."""
    stopped: list[bool] = []

    def answer(name: str) -> httpx.Response:
        return httpx.Response(200, content=(ANSWERS / f"{name}.json").read_bytes(),
                              headers={"Content-Type": "application/json"})

    def handle(request: httpx.Request) -> httpx.Response:
        if request.headers.get("X-DS-API-KEY") != KEY:
            return answer("error_bad_api_key")
        function = request.url.path.rsplit("/", 1)[1]
        form = dict(parse_qsl(request.content.decode()))
        if function == "createBuyUrl":
            return answer("create_buy_url")
        if form.get("purchase_id") != "K7ZQ2M4P":
            return answer("error_not_found")
        if function == "getPurchase":
            return answer("get_purchase_installment")
        stopped.append(True)
        return answer("stop_rebilling_stopped" if len(stopped) == 1 else "stop_rebilling_already_stopped")

    return httpx.MockTransport(handle)


@pytest.fixture(params=["recorded", "sandbox"])
def platform(request: pytest.FixtureRequest) -> Callable[[str], DigistoreClient]:
    """A client factory by API key, against the recorded answers or the sandbox."""
    if request.param == "recorded":
        transport = recorded_transport()
        return lambda key: DigistoreClient(key, vendor="acme", base_url="http://ds24.test", transport=transport,
                                           sleep=lambda _: None)
    base_url = str(request.getfixturevalue("ds24").base_url).rstrip("/")
    return lambda key: client(base_url, key)


def test_the_purchase_reads_as_the_same_order(platform: Callable[[str], DigistoreClient]) -> None:
    with platform(KEY) as ds:
        assert ds.get_order("K7ZQ2M4P", frequency=Frequency.MONTHLY) == EXPECTED_ORDER


def test_stopping_twice_stops_once(platform: Callable[[str], DigistoreClient]) -> None:
    with platform(KEY) as ds:
        first, second = ds.stop_rebilling("K7ZQ2M4P"), ds.stop_rebilling("K7ZQ2M4P")
    assert (first.modified, first.rebilling_active, first.code) == (True, False, "stopped_now")
    assert (second.modified, second.rebilling_active, second.code) == (False, False, "stopped_now")
    assert first.billing_status == second.billing_status == "aborted"


def test_an_unknown_purchase_is_not_found(platform: Callable[[str], DigistoreClient]) -> None:
    with platform(KEY) as ds:
        with pytest.raises(OrderNotFound):
            ds.get_purchase("K7ZQ2M4Q")
        with pytest.raises(OrderNotFound):
            ds.stop_rebilling("K7ZQ2M4Q")


def test_a_wrong_key_is_unauthorized(platform: Callable[[str], DigistoreClient]) -> None:
    with platform("1234567-not-a-key-of-this-vendor-xxxx") as ds, pytest.raises(Unauthorized):
        ds.get_purchase("K7ZQ2M4P")


# -- the sandbox's answers have Digistore24's shape ----------------------------------------------------------


@pytest.mark.parametrize(("function", "form", "recorded"), [
    ("getPurchase", {"purchase_id": "K7ZQ2M4P"}, "get_purchase_installment"),
    ("createBuyUrl", {"product_id": "512345", "buyer[email]": "anna.meier@example.com"}, "create_buy_url"),
    ("stopRebilling", {"purchase_id": "K7ZQ2M4P", "force": "Y"}, "stop_rebilling_stopped"),
    ("getPurchase", {"purchase_id": "NOPE1234"}, "error_not_found"),
    ("stopRebilling", {}, "error_bad_function_params"),
    ("listPurchases", {}, "error_bad_api_call"),
])
def test_each_answer_has_the_recorded_answers_keys(ds24: httpx.Client, function: str, form: dict[str, str],
                                                   recorded: str) -> None:
    answer = ds24.post(f"/api/call/{function}", data=form, headers={"X-DS-API-KEY": KEY})

    expected = json.loads((ANSWERS / f"{recorded}.json").read_text())
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    assert keys_of(answer.json()) == keys_of(expected)
    assert (answer.json()["result"], answer.json().get("code")) == (expected["result"], expected.get("code"))


def test_a_missing_key_a_get_and_the_format_json_path_answer_as_digistore24_does(ds24: httpx.Client) -> None:
    no_key = ds24.post("/api/call/getPurchase", data={"purchase_id": "K7ZQ2M4P"})
    by_get = ds24.get("/api/call/getPurchase", params={"purchase_id": "K7ZQ2M4P"}, headers={"X-DS-API-KEY": KEY})
    format_json = ds24.post("/api/call/getPurchase/format/json", data={"purchase_id": "K7ZQ2M4P"},
                            headers={"X-DS-API-KEY": KEY})
    write_by_get = ds24.get("/api/call/stopRebilling", params={"purchase_id": "K7ZQ2M4P"},
                            headers={"X-DS-API-KEY": KEY})

    assert (no_key.status_code, no_key.json()["result"], no_key.json()["code"]) == (200, "error", 2)
    assert by_get.json()["data"] == format_json.json()["data"]
    assert by_get.json()["data"]["id"] == "K7ZQ2M4P"
    assert (write_by_get.status_code, write_by_get.headers["allow"]) == (405, "POST")
    assert ds24.get("/sandbox/digistore24/purchases/K7ZQ2M4P").json()["rebilling_active"] is True
    assert [(r["method"], r["path"], r["idempotency_key"], r["status"], r.get("error")) for r in log(ds24)] == [
        ("POST", "/api/call/getPurchase", None, 200, "DS_ERR_BAD_API_KEY"),
        ("GET", "/api/call/getPurchase", None, 200, None),
        ("POST", "/api/call/getPurchase/format/json", None, 200, None),
        ("GET", "/api/call/stopRebilling", None, 405, None),
    ]


def test_several_ids_answer_an_object_keyed_by_id(ds24: httpx.Client) -> None:
    ds24.post("/sandbox/digistore24/purchases", json=seed_body(id="L4F5DWT5", payments=1)).raise_for_status()

    data = ds24.post("/api/call/getPurchase", data={"purchase_id": "K7ZQ2M4P,L4F5DWT5"},
                     headers={"X-DS-API-KEY": KEY}).json()["data"]

    assert sorted(data) == ["K7ZQ2M4P", "L4F5DWT5"]
    assert [len(data[i]["transaction_list"]) for i in sorted(data)] == [2, 1]


# -- createBuyUrl -----------------------------------------------------------------------------------------


def test_a_link_for_the_remaining_installments_stores_exactly_that_plan(ds24: httpx.Client) -> None:
    base_url = str(ds24.base_url).rstrip("/")
    with client(base_url) as ds:
        made = ds.create_buy_url(link(owed("50.00", "50.00", "50.00", "50.00")), now=dt.datetime.now(dt.UTC))

    (stored,) = ds24.get("/sandbox/digistore24/buy-urls", params={"custom": CASE_ID}).json()
    assert (stored["id"], stored["url"]) == (made.id, made.url)
    assert made.url == f"{base_url}/ds24/buy/{made.id}"
    assert stored["payment_plan"] == {"first_amount": "50.00", "other_amounts": "50.00", "currency": "EUR",
                                      "number_of_installments": 4, "first_billing_interval": "1_month",
                                      "other_billing_intervals": "1_month"}
    assert stored["tracking"] == {"custom": CASE_ID}
    assert stored["buyer"] == {"email": "anna.meier@example.com", "first_name": "Anna", "last_name": "Meier",
                               "country": "DE"}
    assert (stored["readonly_keys"], stored["product"]) == ("email_and_name", {"id": "512345",
                                                                               "name": "Coaching Programm"})
    valid_until = dt.datetime.fromisoformat(stored["valid_until"])
    assert abs((valid_until - made.valid_until).total_seconds()) < 60
    page = httpx.get(made.url)
    assert page.status_code == 200
    assert 'id="pay-now">50.00 EUR' in page.text and 'id="total">200.00 EUR' in page.text
    assert "3 more payments" in page.text and "Anna Meier" in page.text


def test_a_single_payment_link_asks_for_one_payment_of_everything(ds24: httpx.Client) -> None:
    with client(str(ds24.base_url).rstrip("/")) as ds:
        made = ds.create_buy_url(link(owed("200.00", frequency=None)), now=dt.datetime.now(dt.UTC))

    stored = ds24.get("/sandbox/digistore24/buy-urls").json()
    assert [s["id"] for s in stored] == [made.id]
    assert stored[0]["payment_plan"] == {"first_amount": "200.00", "other_amounts": "0.00", "currency": "EUR",
                                         "number_of_installments": 1, "first_billing_interval": "",
                                         "other_billing_intervals": ""}
    assert stored[0]["tracking"] == {"custom": CASE_ID}
    page = httpx.get(made.url).text
    assert 'id="pay-now">200.00 EUR' in page and 'id="total">200.00 EUR' in page and "Then" not in page


def test_a_product_the_vendor_does_not_sell_is_rejected_as_not_found(ds24: httpx.Client) -> None:
    with client(str(ds24.base_url).rstrip("/")) as ds, pytest.raises(Rejected) as caught:
        ds.create_buy_url(link(owed("50.00", "50.00"), product_id="999999"), now=dt.datetime.now(dt.UTC))

    assert caught.value.code == "DS_ERR_NOT_FOUND"
    assert ds24.get("/sandbox/digistore24/buy-urls").json() == []


def test_another_vendors_key_sees_none_of_acmes_purchases(ds24: httpx.Client) -> None:
    with client(str(ds24.base_url).rstrip("/"), OTHER_KEY) as ds:
        with pytest.raises(OrderNotFound):
            ds.stop_rebilling("K7ZQ2M4P")
        with pytest.raises(Rejected):
            ds.create_buy_url(link(owed("50.00", "50.00")), now=dt.datetime.now(dt.UTC))

    assert ds24.get("/sandbox/digistore24/purchases/K7ZQ2M4P").json()["rebilling_active"] is True


# -- stopRebilling and faults ----------------------------------------------------------------------------


def test_the_stop_is_recorded_once_and_the_purchase_stops(ds24: httpx.Client) -> None:
    with client(str(ds24.base_url).rstrip("/")) as ds:
        ds.stop_rebilling("K7ZQ2M4P")
        ds.stop_rebilling("K7ZQ2M4P")

    purchase = ds24.get("/sandbox/digistore24/purchases/K7ZQ2M4P").json()
    assert (purchase["billing_status"], purchase["rebilling_active"], purchase["billing_stop_reason"]) == (
        "aborted", False, "by_operator")
    assert [r.get("effect") for r in log(ds24)] == ["stopped", "already_stopped"]
    with client(str(ds24.base_url).rstrip("/")) as ds:
        assert ds.get_order("K7ZQ2M4P", frequency=Frequency.MONTHLY).status == "cancelled"


def test_503s_are_unavailable_and_change_nothing(ds24: httpx.Client) -> None:
    ds24.put("/sandbox/faults", json={"error_rate": 1.0, "error_status": 503}).raise_for_status()

    with client(str(ds24.base_url).rstrip("/"), attempts=3) as ds, pytest.raises(PlatformUnavailable):
        ds.stop_rebilling("K7ZQ2M4P")

    assert [(r["status"], r.get("fault"), r.get("effect")) for r in log(ds24)] == [(503, "error", None)] * 3
    ds24.delete("/sandbox/faults").raise_for_status()
    assert ds24.get("/sandbox/digistore24/purchases/K7ZQ2M4P").json()["rebilling_active"] is True


def test_timeouts_are_platform_timeouts_and_change_nothing(ds24: httpx.Client) -> None:
    ds24.put("/sandbox/faults", json={"timeout_rate": 1.0}).raise_for_status()

    with client(str(ds24.base_url).rstrip("/"), attempts=2, read_timeout=0.3) as ds, pytest.raises(PlatformTimeout):
        ds.stop_rebilling("K7ZQ2M4P")

    held = eventually(lambda: [r for r in log(ds24) if r.get("hold") == "client_gone"][1:] and log(ds24),
                      timeout=5, what="both held calls to see their client leave")
    assert [(r["fault"], r["hold"], r["status"], r.get("effect")) for r in held] == [
        ("timeout", "client_gone", None, None)] * 2
    ds24.delete("/sandbox/faults").raise_for_status()
    assert ds24.get("/sandbox/digistore24/purchases/K7ZQ2M4P").json()["rebilling_active"] is True


def test_rate_limits_wait_as_asked_and_long_ones_go_to_the_pipeline(ds24: httpx.Client) -> None:
    base_url = str(ds24.base_url).rstrip("/")
    ds24.put("/sandbox/faults", json={"rate_limit_rate": 1.0, "retry_after_s": 0.5}).raise_for_status()
    waits: list[float] = []
    with client(base_url, attempts=3, waits=waits) as ds, pytest.raises(RateLimited):
        ds.get_purchase("K7ZQ2M4P")
    assert waits == [0.5, 0.5]

    ds24.put("/sandbox/faults", json={"rate_limit_rate": 1.0, "retry_after_s": 120}).raise_for_status()
    with client(base_url, attempts=3) as ds, pytest.raises(RateLimited) as caught:
        ds.stop_rebilling("K7ZQ2M4P")
    assert caught.value.retry_after == 120.0
    assert [(r["status"], r.get("fault")) for r in log(ds24)] == [(429, "rate_limit")] * 4


def until_done(call: Callable[[], T], *, tries: int = 40) -> T:
    """The pipeline's own retry, compressed: call again until an answer comes through."""
    for _ in range(tries - 1):
        try:
            return call()
        except TransientPlatformError:
            continue
    return call()


def test_under_mixed_faults_retries_repeat_the_call_never_the_stop(ds24: httpx.Client) -> None:
    ds24.put("/sandbox/faults", json={"error_rate": 0.4, "timeout_rate": 0.1, "rate_limit_rate": 0.1,
                                      "retry_after_s": 0.01, "seed": 3}).raise_for_status()
    started = time.monotonic()

    with client(str(ds24.base_url).rstrip("/"), attempts=2, read_timeout=0.3) as ds:
        stops = [until_done(lambda: ds.stop_rebilling("K7ZQ2M4P")) for _ in range(3)]
        order = until_done(lambda: ds.get_order("K7ZQ2M4P", frequency=Frequency.MONTHLY))

    assert time.monotonic() - started < 60
    assert [s.modified for s in stops] == [True, False, False]
    assert order.status == "cancelled"
    entries = log(ds24)
    assert Counter(r.get("effect") for r in entries)["stopped"] == 1
    assert {r.get("fault") for r in entries} >= {"error", "timeout", "rate_limit", None}
