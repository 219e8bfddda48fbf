"""The sandbox's own controls: signed IPNs, concurrency, reset, the payment page, faults."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.platform.conftest import IPN_SECRET, TOKEN, WebhookReceiver
from tests.support.sandbox import replacement_for, running_sandbox, sample_order, write_vendors_file
from tests.support.stack import eventually

FIXTURE = Path(__file__).parents[2] / "fixtures" / "copecart" / "payment_failed_breakdown.json"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SHORT_HOLD_S = 2.0


def signature_of(body: bytes) -> str:
    return base64.b64encode(hmac.new(IPN_SECRET.encode(), body, hashlib.sha256).digest()).decode()


def test_fail_delivers_a_signed_payment_failed_ipn(sandbox_client: httpx.Client,
                                                  webhook_receiver: WebhookReceiver) -> None:
    sandbox_client.post("/sandbox/orders", json=sample_order("CC-1001").to_json()).raise_for_status()

    answer = sandbox_client.post("/sandbox/orders/CC-1001/installments/3/fail")

    assert answer.status_code == 200
    assert answer.json()["order"]["plan"]["installments"][2]["status"] == "failed"
    assert answer.json()["delivery"] == {"url": f"{webhook_receiver.url}/webhooks/copecart/acme",
                                         "status": 200, "body": "OK", "error": None}
    (received,) = webhook_receiver.received
    assert received.path == "/webhooks/copecart/acme"
    assert hmac.compare_digest(received.headers["x-copecart-signature"], signature_of(received.body))
    ipn = json.loads(received.body)
    fixture = json.loads(FIXTURE.read_text())
    assert set(ipn) == set(fixture)
    assert ipn["transaction_id"].startswith("T-")
    assert ipn["order_date"]
    same_as_fixture = set(fixture) - {"transaction_id", "order_date", "order_time", "transaction_processed_at"}
    assert {k: ipn[k] for k in same_as_fixture} == {k: fixture[k] for k in same_as_fixture}


def test_pay_delivers_payment_made_and_paying_everything_completes(sandbox_client: httpx.Client,
                                                                   webhook_receiver: WebhookReceiver) -> None:
    sandbox_client.post("/sandbox/orders", json=sample_order("CC-1001", paid=4).to_json()).raise_for_status()

    sandbox_client.post("/sandbox/orders/CC-1001/installments/5/pay").raise_for_status()
    last = sandbox_client.post("/sandbox/orders/CC-1001/installments/6/pay").json()

    assert last["order"]["status"] == "completed"
    ipns = [json.loads(r.body) for r in webhook_receiver.received]
    assert [(i["event_type"], i["rate_number"], i["payment_status"]) for i in ipns] == [
        ("payment.made", "5", "paid"), ("payment.made", "6", "paid")]
    assert ipns[0]["transaction_id"] != ipns[1]["transaction_id"]
    logged = sandbox_client.get("/sandbox/ipns").json()
    assert [i["body"].encode() for i in logged] == [r.body for r in webhook_receiver.received]
    assert [i["signature"] for i in logged] == [r.headers["x-copecart-signature"] for r in webhook_receiver.received]


def test_ipns_after_n_answers_only_the_deliveries_after_the_first_n(sandbox_client: httpx.Client) -> None:
    sandbox_client.post("/sandbox/orders", json=sample_order("CC-1001", paid=3).to_json()).raise_for_status()
    for number in (4, 5):
        sandbox_client.post(f"/sandbox/orders/CC-1001/installments/{number}/pay").raise_for_status()
    whole = sandbox_client.get("/sandbox/ipns").json()

    # A poller that remembers how many it has read gets each delivery once, in order.
    seen = sandbox_client.get("/sandbox/ipns", params={"after": 0}).json()
    sandbox_client.post("/sandbox/orders/CC-1001/installments/6/pay").raise_for_status()
    new = sandbox_client.get("/sandbox/ipns", params={"after": len(seen)}).json()

    assert len(whole) == 2 and seen == whole
    assert [json.loads(i["body"])["rate_number"] for i in new] == ["6"]
    assert sandbox_client.get("/sandbox/ipns").json() == whole + new
    assert sandbox_client.get("/sandbox/ipns", params={"after": 1}).json() == [whole[1], *new]
    assert sandbox_client.get("/sandbox/ipns", params={"after": 3}).json() == []
    assert sandbox_client.get("/sandbox/ipns", params={"after": 50}).json() == []


@pytest.mark.parametrize("after", ["-1", "two", "1.5", "", " 1", "²"])
def test_ipns_after_anything_but_a_count_is_refused_naming_it(sandbox_client: httpx.Client, after: str) -> None:
    answer = sandbox_client.get("/sandbox/ipns", params={"after": after})

    assert answer.status_code == 400
    assert answer.json() == {"error": "invalid_after",
                             "message": f"after: must be a whole number of entries, 0 or more; got {after!r}"}


def test_a_one_time_order_sends_a_one_time_payment_ipn(sandbox_client: httpx.Client,
                                                       webhook_receiver: WebhookReceiver) -> None:
    sandbox_client.post("/sandbox/orders", json=sample_order("CC-1001").to_json()).raise_for_status()
    created = sandbox_client.post("/v1/orders", json=replacement_for(sample_order("CC-1001")).to_json(),
                                  headers={"Idempotency-Key": "k"}).json()

    sandbox_client.post(f"/sandbox/orders/{created['id']}/installments/1/fail").raise_for_status()

    ipn = json.loads(webhook_receiver.received[0].body)
    assert (ipn["payment_plan"], ipn["total_number_of_payments"], ipn["transaction_amount"]) == (
        "one_time_payment", None, "200.00")


def test_an_unreachable_webhook_is_reported_not_hidden(sandbox_client: httpx.Client,
                                                       webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.status = 503
    sandbox_client.post("/sandbox/orders", json=sample_order("CC-1001").to_json()).raise_for_status()

    delivery = sandbox_client.post("/sandbox/orders/CC-1001/installments/3/fail").json()["delivery"]

    assert (delivery["status"], delivery["error"]) == (503, None)
    assert sandbox_client.get("/sandbox/ipns").json()[0]["status"] == 503


def test_fail_for_a_vendor_missing_from_the_vendors_file_is_refused(sandbox_client: httpx.Client,
                                                                   webhook_receiver: WebhookReceiver) -> None:
    order = {**sample_order("CC-1001").to_json(), "vendor": "nobody"}
    sandbox_client.post("/sandbox/orders", json=order).raise_for_status()

    answer = sandbox_client.post("/sandbox/orders/CC-1001/installments/3/fail")

    assert answer.status_code == 422
    assert answer.json()["error"] == "unknown_vendor"
    assert webhook_receiver.received == []


def test_two_simultaneous_creates_with_one_key_make_one_order(sandbox: str, sandbox_client: httpx.Client) -> None:
    sandbox_client.post("/sandbox/orders", json=sample_order("CC-1001").to_json()).raise_for_status()
    sandbox_client.put("/sandbox/faults", json={"latency_ms": 200}).raise_for_status()
    body = replacement_for(sample_order("CC-1001")).to_json()

    async def both() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=sandbox, timeout=10,
                                     headers={"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "k"}) as c:
            return list(await asyncio.gather(c.post("/v1/orders", json=body), c.post("/v1/orders", json=body)))

    answers = asyncio.run(both())

    assert [a.status_code for a in answers] == [201, 201]
    assert answers[0].json() == answers[1].json()
    assert len(sandbox_client.get("/sandbox/orders", params={"replaces": "CC-1001"}).json()) == 1
    effects = [r.get("effect") for r in sandbox_client.get("/sandbox/requests").json()]
    assert sorted(effects, key=str) == ["created", "replayed"]


def test_writes_without_an_idempotency_key_are_refused(sandbox_client: httpx.Client) -> None:
    answer = sandbox_client.post("/v1/orders", json=replacement_for(sample_order()).to_json())

    assert answer.status_code == 400
    assert answer.json()["error"] == "missing_idempotency_key"


def test_an_invalid_body_names_the_field(sandbox_client: httpx.Client) -> None:
    body = replacement_for(sample_order()).to_json()
    body["plan"]["installments"][0]["amount"] = "200.00"

    answer = sandbox_client.post("/v1/orders", json=body, headers={"Idempotency-Key": "k"})

    assert answer.status_code == 422
    assert answer.json() == {"error": "invalid_order",
                             "message": "plan.installments[0].amount: must be an integer"}


def test_reset_forgets_orders_requests_ipns_faults_and_keys(sandbox_client: httpx.Client) -> None:
    sandbox_client.post("/sandbox/orders", json=sample_order("CC-1001").to_json()).raise_for_status()
    sandbox_client.post("/sandbox/orders/CC-1001/installments/3/fail").raise_for_status()
    sandbox_client.post("/v1/orders", json=replacement_for(sample_order()).to_json(),
                        headers={"Idempotency-Key": "k"}).raise_for_status()
    sandbox_client.put("/sandbox/faults", json={"error_rate": 1.0}).raise_for_status()

    sandbox_client.post("/sandbox/reset").raise_for_status()

    assert sandbox_client.get("/sandbox/orders").json() == []
    assert sandbox_client.get("/sandbox/requests").json() == []
    assert sandbox_client.get("/sandbox/ipns").json() == []
    other_body = {**replacement_for(sample_order()).to_json(), "replaces": None}
    again = sandbox_client.post("/v1/orders", json=other_body, headers={"Idempotency-Key": "k"})
    assert again.status_code == 201


def test_the_payment_page_shows_what_is_owed_and_escapes_names(sandbox_client: httpx.Client) -> None:
    order = sample_order("CC-1001", product_name="<script>alert(1)</script> Coaching").to_json()
    order["buyer"]["first_name"] = "<b>Anna</b>"
    sandbox_client.post("/sandbox/orders", json=order).raise_for_status()

    page = sandbox_client.get("/pay/CC-1001")

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Coaching" in page.text
    assert "&lt;b&gt;Anna&lt;/b&gt;" in page.text
    assert "200.00 EUR" in page.text
    assert "in 4 installments" in page.text


def test_faults_are_reproducible_with_a_seed(sandbox_client: httpx.Client) -> None:
    def statuses() -> list[int]:
        sandbox_client.post("/sandbox/reset").raise_for_status()
        sandbox_client.put("/sandbox/faults", json={"error_rate": 0.3, "error_status": 502,
                                                    "rate_limit_rate": 0.2, "seed": 42}).raise_for_status()
        return [sandbox_client.get("/v1/orders/CC-1").status_code for _ in range(30)]

    first, second = statuses(), statuses()

    assert first == second
    assert {502, 429, 404} == set(first)
    log = sandbox_client.get("/sandbox/requests").json()
    assert [r["status"] for r in log] == second
    assert all(r.get("fault") == {502: "error", 429: "rate_limit", 404: None}[r["status"]] for r in log)


def test_a_fault_answers_before_any_effect(sandbox_client: httpx.Client) -> None:
    sandbox_client.post("/sandbox/orders", json=sample_order("CC-1001").to_json()).raise_for_status()
    sandbox_client.put("/sandbox/faults", json={"error_rate": 1.0}).raise_for_status()

    created = sandbox_client.post("/v1/orders", json=replacement_for(sample_order()).to_json(),
                                  headers={"Idempotency-Key": "k"})
    cancelled = sandbox_client.post("/v1/orders/CC-1001/cancel", json={"reason": "r"},
                                    headers={"Idempotency-Key": "c"})

    assert (created.status_code, cancelled.status_code) == (503, 503)
    sandbox_client.delete("/sandbox/faults").raise_for_status()
    assert sandbox_client.get("/sandbox/orders", params={"replaces": "CC-1001"}).json() == []
    assert sandbox_client.get("/v1/orders/CC-1001").json()["status"] == "active"


def test_bad_faults_are_refused_naming_the_key(sandbox_client: httpx.Client) -> None:
    answer = sandbox_client.put("/sandbox/faults", json={"error_rte": 0.5})

    assert answer.status_code == 422
    assert "error_rte" in answer.json()["message"]


@pytest.mark.parametrize("header", [None, "Bearer wrong", "sandbox-token"])
def test_v1_needs_the_bearer_token(sandbox: str, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}

    answer = httpx.get(f"{sandbox}/v1/orders/CC-1", headers=headers, timeout=5)

    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/nope"), ("POST", "/v1/orders/CC-1001/refund"),
                                              ("GET", "/v1"), ("GET", "/v1/")])
def test_an_unknown_v1_path_answers_404_in_the_error_shape_and_is_logged(sandbox_client: httpx.Client,
                                                                         method: str, path: str) -> None:
    answer = sandbox_client.request(method, path, headers={"Idempotency-Key": "k"})

    assert answer.status_code == 404
    assert answer.json() == {"error": "not_found", "message": f"no such endpoint: {path}"}
    assert sandbox_client.get("/sandbox/requests").json() == [
        {"method": method, "path": path, "idempotency_key": "k", "status": 404}]


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("DELETE", "/v1/orders/CC-1001", "GET, HEAD"),
    ("GET", "/v1/orders", "POST"),
    ("PUT", "/v1/orders/CC-1001/cancel", "POST"),
])
def test_a_known_v1_path_with_another_method_answers_405_with_allow(sandbox_client: httpx.Client, method: str,
                                                                    path: str, allow: str) -> None:
    sandbox_client.post("/sandbox/orders", json=sample_order("CC-1001").to_json()).raise_for_status()

    answer = sandbox_client.request(method, path)

    assert answer.status_code == 405
    assert answer.headers["allow"] == allow
    assert answer.json() == {"error": "method_not_allowed",
                             "message": f"{method} is not allowed on {path}; use {allow}"}
    assert sandbox_client.get("/sandbox/requests").json() == [
        {"method": method, "path": path, "idempotency_key": None, "status": 405}]
    assert sandbox_client.get("/v1/orders/CC-1001").json()["status"] == "active"


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/nope"), ("DELETE", "/v1/orders/CC-1001"),
                                              ("GET", "/v1/orders"), ("GET", "/v1/orders/CC-1")])
def test_a_v1_call_without_the_token_answers_401_whatever_its_path(sandbox: str, sandbox_client: httpx.Client,
                                                                   method: str, path: str) -> None:
    answer = httpx.request(method, f"{sandbox}{path}", timeout=5)

    assert answer.status_code == 401
    assert answer.json() == {"error": "unauthorized", "message": "missing or wrong bearer token"}
    assert sandbox_client.get("/sandbox/requests").json() == [
        {"method": method, "path": path, "idempotency_key": None, "status": 401}]


def test_faults_apply_to_unknown_v1_calls_too(sandbox_client: httpx.Client) -> None:
    sandbox_client.put("/sandbox/faults", json={"error_rate": 1.0, "error_status": 502}).raise_for_status()

    answer = sandbox_client.get("/v1/nope")

    assert answer.status_code == 502
    assert answer.json()["error"] == "injected_fault"
    assert sandbox_client.get("/sandbox/requests").json() == [
        {"method": "GET", "path": "/v1/nope", "idempotency_key": None, "status": 502, "fault": "error"}]


@pytest.fixture(scope="module")
def short_hold_sandbox(tmp_path_factory: pytest.TempPathFactory, webhook_receiver: WebhookReceiver) -> Iterator[str]:
    """A sandbox of its own whose timeout faults hold a request seconds, not 30 s, so a client can outwait one."""
    vendors = write_vendors_file(tmp_path_factory.mktemp("short-hold"), secret=IPN_SECRET)
    with running_sandbox(vendors_file=vendors, webhook_base=webhook_receiver.url, token=TOKEN,
                         timeout_hold_s=SHORT_HOLD_S) as url:
        yield url


def test_a_timeout_is_logged_as_held_then_with_the_504_it_answered(short_hold_sandbox: str) -> None:
    with httpx.Client(base_url=short_hold_sandbox, timeout=10) as control, ThreadPoolExecutor(1) as background:
        control.post("/sandbox/reset").raise_for_status()
        control.put("/sandbox/faults", json={"timeout_rate": 1.0}).raise_for_status()
        started = time.monotonic()
        waiting = background.submit(httpx.post, f"{short_hold_sandbox}/v1/orders/CC-1001/cancel",
                                    json={"reason": "r"}, headers={**AUTH, "Idempotency-Key": "c"}, timeout=10)

        def held() -> list[dict[str, object]] | None:
            log: list[dict[str, object]] = control.get("/sandbox/requests").json()
            return log if log and "fault" in log[0] else None

        while_held = eventually(held, timeout=SHORT_HOLD_S, what="the held call in the request log")
        answer = waiting.result(timeout=10)
        waited = time.monotonic() - started
        log = control.get("/sandbox/requests").json()

    entry = {"method": "POST", "path": "/v1/orders/CC-1001/cancel", "idempotency_key": "c", "fault": "timeout"}
    assert while_held == [{**entry, "status": None, "hold": "holding"}]
    assert answer.status_code == 504
    assert answer.json() == {"error": "timeout", "message": "held by an injected timeout"}
    assert waited >= SHORT_HOLD_S
    assert log == [{**entry, "status": 504, "hold": "answered"}]


def test_a_timeout_the_client_gave_up_on_is_logged_without_a_status(sandbox: str,
                                                                    sandbox_client: httpx.Client) -> None:
    sandbox_client.put("/sandbox/faults", json={"timeout_rate": 1.0}).raise_for_status()

    with pytest.raises(httpx.ReadTimeout):
        httpx.get(f"{sandbox}/v1/orders/CC-1001", headers=AUTH, timeout=0.3)

    def after_the_hold() -> list[dict[str, object]] | None:
        log: list[dict[str, object]] = sandbox_client.get("/sandbox/requests").json()
        return None if log[0].get("hold") in (None, "holding") else log

    assert eventually(after_the_hold, timeout=5, what="the sandbox to see the client leave") == [
        {"method": "GET", "path": "/v1/orders/CC-1001", "idempotency_key": None, "status": None,
         "fault": "timeout", "hold": "client_gone"}]
