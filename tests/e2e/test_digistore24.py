"""Digistore24, end to end on real processes: a missed installment → one payment link for what is owed →
the original's rebilling stopped once → one buyer email → the buyer pays through the link → recovered.

The vendor ``umbrella`` sells on Digistore24 (``platform = "digistore24"``); the sandbox plays Digistore24's API
and sends its signed form IPNs, as Digistore24 does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from dunlink.usecases.pipeline import advance_case, handle_event
from platforms.digistore24.signature import sha_sign
from tests.support.stack import SECRET, Stack, eventually, running_stack

VENDOR = "umbrella"
BUYER = "mia.schmidt@example.com"


def _purchase(stack: Stack, purchase_id: str, *, payments: int = 2) -> None:
    """Six monthly installments of 49.00 EUR, bought so long ago that the third is due, the first ``payments``
    paid."""
    bought = (datetime.now(UTC) - timedelta(days=65)).strftime("%Y-%m-%d %H:%M:%S")
    stack.ds24("POST", "/purchases", json={"created_at": bought,
        "id": purchase_id, "vendor": VENDOR, "product": {"id": "512345", "name": "Ceramics Online Course"},
        "buyer": {"email": BUYER, "first_name": "Mia", "last_name": "Schmidt", "country": "DE"},
        "currency": "EUR", "first_amount": "49.00", "other_amounts": "49.00", "number_of_installments": 6,
        "billing_interval": "1_month", "payments": payments})


def _missed(stack: Stack, purchase_id: str, number: int) -> dict[str, Any]:
    answer: dict[str, Any] = stack.ds24("POST", f"/purchases/{purchase_id}/payments/{number}/missed")
    return answer


def _calls(stack: Stack, function: str) -> list[dict[str, Any]]:
    return [r for r in stack.requests() if r["path"].startswith(f"/api/call/{function}")]


def test_a_missed_installment_is_paid_through_one_new_link(stack: Stack) -> None:
    _purchase(stack, "DS-1001")
    delivery = _missed(stack, "DS-1001", 3)["delivery"]
    assert (delivery["status"], delivery["body"]) == (200, "OK")

    case = eventually(lambda: stack.case_in("DS-1001", "awaiting_payment", VENDOR), what="the buyer's link")
    [link] = stack.ds24("GET", "/buy-urls", params={"vendor": VENDOR})
    assert link["tracking"]["custom"] == case.id
    assert case.payment_url == link["url"]
    assert case.outstanding_minor == 4 * 4900
    assert [r["status"] for r in _calls(stack, "stopRebilling")] == [200]
    assert len(_calls(stack, "createBuyUrl")) == 1

    [mail] = eventually(lambda: stack.mails_to(BUYER) or None, what="the buyer's email")
    assert link["url"] in mail.text and link["url"] in mail.html
    assert "€196.00" in mail.text

    paid = stack.ds24("POST", f"/buy-urls/{link['id']}/pay")
    assert paid["delivery"]["status"] == 200
    recovered = eventually(lambda: stack.case_in("DS-1001", "recovered", VENDOR), what="the case to recover")
    assert recovered.recovered_minor == 4900
    assert len(stack.mails_to(BUYER)) == 1


def test_faults_on_every_call_and_duplicate_ipns_still_make_one_link_and_one_stop(stack: Stack) -> None:
    _purchase(stack, "DS-1002")
    stack.faults(error_rate=0.4, error_status=503, timeout_rate=0.1, seed=7)
    _missed(stack, "DS-1002", 3)
    stored = [event for event in stack.inbox() if event.order_id == "DS-1002"]
    assert len(stored) == 1
    # The same IPN delivered again (Digistore24 retries until it reads OK): stored once.
    again = stack.ipns()[-1]
    repeated = httpx.post(again["url"], content=again["body"].encode(), timeout=10,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (repeated.status_code, repeated.text) == (200, "OK")
    case = eventually(lambda: stack.case_in("DS-1002", "awaiting_payment", VENDOR), timeout=90,
                      what="the link despite the faults")
    stack.clear_faults()
    made = [r for r in _calls(stack, "createBuyUrl") if r["status"] == 200 and not r.get("fault")]
    stops = [r for r in _calls(stack, "stopRebilling") if r["status"] == 200 and not r.get("fault")]
    assert len(made) == 1 and len(stops) >= 1
    links = stack.ds24("GET", "/buy-urls", params={"custom": case.id})
    assert [link["url"] for link in links] == [case.payment_url]
    assert [e.event_type for e in stack.inbox() if e.order_id == "DS-1002"] == [
        "payment.failed", "payment.recurring.cancelled"]  # the missed payment once, then the stop's own IPN
    assert len(eventually(lambda: stack.mails_to(BUYER) or None, what="one email")) == 1


def test_a_wrong_signature_is_refused_and_the_connection_test_answered_ok(stack: Stack) -> None:
    url = f"{stack.api_url}/webhooks/digistore24/{VENDOR}"
    forged = httpx.post(url, data={"event": "on_payment_missed", "order_id": "DS-9", "sha_sign": "0" * 64},
                        timeout=10)
    assert forged.status_code == 401
    test = {"event": "connection_test", "merchant_id": "12345"}
    tested = httpx.post(url, data={**test, "sha_sign": sha_sign(test, SECRET)}, timeout=10)
    assert (tested.status_code, tested.text) == (200, "OK")
    wrong_platform = httpx.post(f"{stack.api_url}/webhooks/copecart/{VENDOR}", content=b"{}", timeout=10)
    assert wrong_platform.status_code == 404
    assert stack.inbox() == []


def test_the_original_paid_while_the_link_is_being_made_withdraws_it_and_emails_no_one(
        database_url: str, tmp_path: Path) -> None:
    """The buyer's card goes through on Digistore24's retry after the link was made and before the original's
    rebilling was stopped: nothing is stopped, the unused link is left to lapse, and no buyer is emailed."""
    with running_stack(tmp_path, database_url, workers=0, beat=False) as stack:
        _purchase(stack, "DS-1003")
        _missed(stack, "DS-1003", 3)
        [missed] = stack.inbox()
        with stack.services() as (services, _):
            opened = handle_event(services, missed.id)
            assert opened.case_id is not None
            advance_case(services, opened.case_id, max_steps=2)  # read the purchase, make the link
            assert stack.case_in("DS-1003", "replacement_created", VENDOR) is not None
            stack.ds24("POST", "/purchases/DS-1003/payments/3/paid")
            [paid] = [event for event in stack.inbox() if event.id != missed.id]
            assert handle_event(services, paid.id).outcome == "original_paid:cancelling_replacement"
            advance_case(services, opened.case_id)
        resolved = stack.case_in("DS-1003", "resolved", VENDOR)
        assert resolved is not None
        assert _calls(stack, "stopRebilling") == []
        assert stack.mail.messages == []
