"""CopeCart as it is: a vendor without an order API makes the replacement by hand, guided by dunlink.

The vendor (hooli, ``replacement_by = "vendor"``) gets a task email, opens the vendor page from it in Chromium,
makes a phone offer in the sandbox (as in CopeCart), pastes its link and cancels the original; only then is the
buyer emailed, once; the buyer pays the new order and the case is recovered. Real processes throughout.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from selenium.webdriver.common.by import By

from adapters.email.capture import ReceivedMail
from tests.support.browser import chromium, overflowing
from tests.support.stack import Stack, eventually, order_json

VENDOR = "hooli"
TASKS = "tasks@hooli.example"
BUYER = "anna@example.com"
_PAGE = re.compile(r"http://127\.0\.0\.1:\d+/vendor/cases/[A-Za-z0-9_.-]+")


def _failed_installment(stack: Stack, order_id: str, *, paid: int = 2, installment: int = 3) -> None:
    """The original's first installments are paid (their IPNs arrive), then one fails."""
    stack.seed(order_json(order_id, vendor=VENDOR, paid=0))
    for number in range(1, paid + 1):
        assert stack.pay(order_id, number)["delivery"]["status"] == 200
    assert stack.fail(order_id, installment)["delivery"]["status"] == 200


def _task_email(stack: Stack) -> ReceivedMail:
    return eventually(lambda: next(iter(stack.mails_to(TASKS)), None), what="the vendor's task email")


def _page_url(mail: ReceivedMail) -> str:
    found = _PAGE.search(mail.text)
    assert found is not None, mail.text
    assert found.group(0) in mail.html
    return found.group(0)


def _phone_offer(stack: Stack, order_id: str) -> dict[str, Any]:
    """What the vendor enters in CopeCart's phone offer: the buyer, and the four installments left of 50.00."""
    original = stack.order(order_id)
    return stack.phone_offer({
        "vendor": VENDOR, "product_id": original["product"]["id"], "buyer": original["buyer"], "currency": "EUR",
        "plan": {"kind": "installments", "frequency": "monthly", "installments": [
            {"number": n, "amount": 5000, "due_date": f"2026-{11 + n // 3:02d}-01", "status": "open"}
            for n in range(1, 5)]}})


def _submit(driver: Any, action_suffix: str) -> None:
    form = driver.find_element(By.CSS_SELECTOR, f"form[action$='{action_suffix}']")
    form.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()


def test_the_vendor_makes_the_link_in_the_browser_and_the_buyer_pays_it(stack: Stack, tmp_path: Path) -> None:
    _failed_installment(stack, "CC-2001")
    task = _task_email(stack)
    assert task.rcpt_tos == (TASKS,)
    assert "Hooli Kurse" in task.message["From"]
    for text in (task.text, task.html):
        assert "CC-2001" in text and "anna@example.com" in text and "Anna" in text and "Meier" in text
        assert "50,00 €" in text and "200,00 €" in text  # four installments of 50.00, 200.00 in all
    page = _page_url(task)
    assert stack.mails_to(BUYER) == []

    offer = _phone_offer(stack, "CC-2001")
    with chromium(width=375, height=812, profile=tmp_path / "profile") as driver:
        driver.get(page)
        assert "CC-2001" in driver.page_source and "200,00 €" in driver.page_source
        assert overflowing(driver) == []
        driver.find_element(By.NAME, "payment_url").send_keys(offer["payment_url"])
        driver.find_element(By.NAME, "order_id").send_keys(offer["id"])
        _submit(driver, "/link")
        # The form answers 303 to the same page: wait for the page that shows the recorded link.
        eventually(lambda: offer["payment_url"] in driver.page_source or None, what="the page with the link")
        assert driver.current_url == page
        assert driver.get_cookies() == []
        violations = [entry for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]]
        assert violations == []
    case = eventually(lambda: stack.case_in("CC-2001", "awaiting_original_cancel", VENDOR),
                      what="the case to wait for the original's cancellation")
    assert case.payment_url == offer["payment_url"]
    assert stack.mails_to(BUYER) == []  # not before the original is cancelled

    assert stack.vendor_cancel("CC-2001")["delivery"]["status"] == 200
    [mail] = eventually(lambda: stack.mails_to(BUYER) or None, what="the buyer's payment-link email")
    assert offer["payment_url"] in mail.text and offer["payment_url"] in mail.html
    assert "CC-2001" in mail.text
    eventually(lambda: stack.case_in("CC-2001", "awaiting_payment", VENDOR), what="the case to await payment")

    assert stack.pay(offer["id"], 1)["delivery"]["status"] == 200
    recovered = eventually(lambda: stack.case_in("CC-2001", "recovered", VENDOR), what="the case to be recovered")
    assert recovered.recovered_minor == 5000
    assert len(stack.mails_to(BUYER)) == 1


def test_a_link_pasted_but_the_original_never_cancelled_sends_no_buyer_email_and_reminds_daily(stack: Stack) -> None:
    _failed_installment(stack, "CC-2002")
    page = _page_url(_task_email(stack))
    offer = _phone_offer(stack, "CC-2002")
    answer = httpx.post(f"{page}/link", data={"payment_url": offer["payment_url"]}, timeout=10)
    assert answer.status_code == 303 and answer.headers["location"] == page.removeprefix(stack.api_url)
    eventually(lambda: stack.case_in("CC-2002", "awaiting_original_cancel", VENDOR), what="the link recorded")

    stack.due(datetime.now(UTC) + timedelta(days=1, minutes=1))
    reminders = eventually(lambda: stack.mails_to(TASKS)[1:] or None,
                           what="the vendor's daily reminder")
    assert "CC-2002" in reminders[0].text
    assert stack.mails_to(BUYER) == []


def test_a_link_to_a_foreign_host_is_refused_and_nothing_is_sent(stack: Stack) -> None:
    _failed_installment(stack, "CC-2003")
    page = _page_url(_task_email(stack))
    answer = httpx.post(f"{page}/link", data={"payment_url": "https://evil.example/pay/CC-2003"}, timeout=10)
    assert answer.status_code == 400
    assert "evil.example" in answer.text
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in answer.headers["content-security-policy"]
    httpx.post(f"{page}/original-cancelled", timeout=10)
    case = eventually(lambda: stack.case_for("CC-2003", VENDOR) if stack.case_for("CC-2003", VENDOR)
                      .original_known_cancelled else None, what="the original known cancelled")
    assert case.payment_url is None and case.state.value == "awaiting_vendor_link"
    assert stack.mails_to(BUYER) == []


def test_cannot_generate_then_a_link_later_resumes_the_case(stack: Stack) -> None:
    _failed_installment(stack, "CC-2004")
    page = _page_url(_task_email(stack))
    answer = httpx.post(f"{page}/cannot-generate", timeout=10)
    assert answer.status_code == 303
    shown = httpx.get(page, timeout=10)
    assert shown.status_code == 200 and "DunningCopeCart" in shown.text
    case = stack.case_in("CC-2004", "needs_person", VENDOR)
    assert case is not None and case.reason_code == "cannot_generate_link"

    offer = _phone_offer(stack, "CC-2004")
    assert httpx.post(f"{page}/link", data={"payment_url": offer["payment_url"]}, timeout=10).status_code == 303
    assert httpx.post(f"{page}/original-cancelled", timeout=10).status_code == 303
    [mail] = eventually(lambda: stack.mails_to(BUYER) or None, what="the buyer's email after all")
    assert offer["payment_url"] in mail.text


def test_a_tampered_or_foreign_token_is_a_plain_404(stack: Stack) -> None:
    _failed_installment(stack, "CC-2005")
    page = _page_url(_task_email(stack))
    token = page.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    answers = [httpx.get(f"{stack.api_url}/vendor/cases/{tampered}", timeout=10),
               httpx.get(f"{stack.api_url}/vendor/cases/nothing", timeout=10),
               httpx.post(f"{stack.api_url}/vendor/cases/{tampered}/original-cancelled", timeout=10)]
    for answer in answers:
        assert (answer.status_code, answer.text) == (404, "Not Found")
        assert "set-cookie" not in answer.headers
    assert httpx.get(page, timeout=10).status_code == 200
    assert httpx.get(f"{page}/link", timeout=10).status_code == 405  # forms are POST only
    assert stack.case_for("CC-2005", VENDOR).original_known_cancelled is False


def test_the_original_paid_while_waiting_tells_the_vendor_to_deactivate_the_link(stack: Stack) -> None:
    _failed_installment(stack, "CC-2006")
    page = _page_url(_task_email(stack))
    offer = _phone_offer(stack, "CC-2006")
    httpx.post(f"{page}/link", data={"payment_url": offer["payment_url"]}, timeout=10)
    eventually(lambda: stack.case_in("CC-2006", "awaiting_original_cancel", VENDOR), what="the link recorded")

    assert stack.pay("CC-2006", 3)["delivery"]["status"] == 200  # the card went through after all
    eventually(lambda: stack.case_in("CC-2006", "resolved", VENDOR), what="the case to end")
    told = [m for m in stack.mails_to(TASKS) if offer["payment_url"] in m.text]
    assert len(told) == 1
    assert stack.mails_to(BUYER) == []
    assert httpx.get(page, timeout=10).status_code == 404  # the case is over


def test_the_api_vendors_run_unchanged_beside_a_vendor_made_one(stack: Stack) -> None:
    stack.seed(order_json("CC-3001", vendor="acme"))
    _failed_installment(stack, "CC-3002")
    assert stack.fail("CC-3001", 3)["delivery"]["status"] == 200
    eventually(lambda: stack.case_in("CC-3001", "awaiting_payment", "acme"), what="the API vendor's case")
    assert len(stack.replacements("CC-3001")) == 1
    _task_email(stack)
    assert stack.replacements("CC-3002") == []  # nothing is created through the API for hooli
