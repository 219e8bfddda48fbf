"""The vendor page over HTTP, as an attacker and a hurried vendor use it, on SQLite and PostgreSQL: the api's
app in front of a real database and a real SMTP server. Every answer carries the page's headers and no
cookie; a redirect never comes from the Host header; forms are bounded; a token acts on its own case only and
only while it is open; whatever the vendor clicks, in whatever order, the buyer gets one email with one link."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from adapters.email.capture import MailCatcher
from adapters.web.tokens import VendorTokens
from adapters.web.vendor_page import CONTENT_SECURITY_POLICY
from domain.case import CaseState, DunningCase
from dunlink.config.settings import Settings
from dunlink.runtime.bootstrap import Services, build_services
from dunlink.usecases.pipeline import advance_case, handle_event, send_email
from dunlink.webapp.app import create_app
from tests.support.stack import SECRET, SECRET_KEY
from tests.support.vendors import vendors_toml

T = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
FIXTURES = Path(__file__).parents[2] / "fixtures" / "copecart"
LINK = "http://127.0.0.1:8090/pay/CC-900001"
OTHER_LINK = "http://127.0.0.1:8090/pay/CC-900002"
TASKS = "tasks@hooli.example"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclasses.dataclass
class Api:
    services: Services
    clock: Clock
    mail: MailCatcher
    client: TestClient

    def deliver(self, body: dict[str, Any], *, vendor: str = "hooli") -> str:
        with self.services.uow() as uow:
            stored = uow.inbox.add(vendor=vendor, event_type=body["event_type"], dedup_key=body["transaction_id"],
                                   order_id=body["order_id"], body=json.dumps(body), now=self.clock())
            uow.commit()
        return handle_event(self.services, stored.id).outcome

    def case(self, case_id: str) -> DunningCase:
        with self.services.uow() as uow:
            case = uow.cases.get(case_id)
        assert case is not None
        return case

    def tasked(self, order_id: str = "CC-1001") -> str:
        for body in (ipn("payment.made", 1, order_id=order_id), ipn("payment.made", 2, order_id=order_id),
                     ipn("payment.failed", 3, order_id=order_id)):
            self.deliver(body)
        with self.services.uow() as uow:
            found = uow.cases.latest_for_order("hooli", order_id)
        assert found is not None
        assert advance_case(self.services, found.id) == "planned"
        assert send_email(self.services, found.id) == "send_vendor_task_sent"
        return found.id

    def page(self, case_id: str) -> str:
        assert self.services.tokens is not None
        return f"/vendor/cases/{self.services.tokens.token(case_id)}"

    def buyer_emails(self) -> list[str]:
        return [m.text for m in self.mail.messages if m.rcpt_tos != (TASKS,)]


def ipn(event_type: str, rate: int, *, order_id: str = "CC-1001", transaction: str | None = None,
        **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / "payment_failed_breakdown.json").read_text())
    body.update(event_type=event_type, order_id=order_id, rate_number=str(rate),
                transaction_id=transaction or f"T-{order_id}-{event_type}-{rate}",
                payment_status="paid" if event_type == "payment.made" else "failed", **fields)
    return body


@pytest.fixture
def api(database_url: str, tmp_path: Path) -> Iterator[Api]:
    (tmp_path / "vendors.toml").write_text(vendors_toml({"hooli": SECRET, "acme": SECRET}), encoding="utf-8")
    mail = MailCatcher(tmp_path / "mail").start()
    settings = Settings(database_url=database_url, vendors_file=tmp_path / "vendors.toml", secret_key=SECRET_KEY,
                        smtp_url=f"smtp://127.0.0.1:{mail.port}", mail_from="dunning@dunlink.example",
                        public_url="https://dunning.example.com")
    clock = Clock(T)
    built = dataclasses.replace(build_services(settings, enqueue=lambda *_: None), clock=clock)
    try:
        with TestClient(create_app(built), base_url="http://127.0.0.1:8000", follow_redirects=False) as client:
            yield Api(built, clock, mail, client)
    finally:
        built.engine.dispose()
        mail.stop()


def assert_page_headers(answer: httpx.Response) -> None:
    where = f"{answer.request.method} {answer.request.url.path[:40]} -> {answer.status_code}"
    assert answer.headers.get("content-security-policy") == CONTENT_SECURITY_POLICY, where
    assert answer.headers.get("referrer-policy") == "no-referrer", where
    assert "set-cookie" not in answer.headers, where


# -- defects: each of these fails on the code as it is ------------------------------------------------------


def test_method_not_allowed_and_unknown_paths_under_the_vendor_page_carry_its_headers_too(api: Api) -> None:
    """The page's module says every answer carries the strict CSP and no-referrer; paths under a token that the
    routes do not serve (a GET of a form's action, OPTIONS, a path below the token) answer from the framework
    without them."""
    page = api.page(api.tasked())
    answers = [api.client.get(f"{page}/link"), api.client.options(page), api.client.put(page),
               api.client.post(page, data={"payment_url": LINK}), api.client.get(f"{page}/nothing-here"),
               api.client.delete(f"{page}/original-cancelled")]
    for answer in answers:
        assert answer.status_code in (404, 405)
        assert_page_headers(answer)


def test_after_the_case_went_to_a_person_as_overdue_the_vendors_cancel_click_emails_the_buyer(api: Api) -> None:
    """The vendor pasted the link on day 1 but confirmed the cancellation only after two weeks of daily
    reminders, when the case had gone to a person. The page still offers the button and answers 303; the
    buyer must then be emailed, as the page promises once both are known. Today nothing follows."""
    case_id = api.tasked()
    page = api.page(case_id)
    assert api.client.post(f"{page}/link", data={"payment_url": LINK}).status_code == 303
    for _ in range(30):
        case = api.case(case_id)
        if case.state is CaseState.NEEDS_PERSON:
            break
        api.clock.now = case.next_attempt_at or api.clock.now
        step = case.next_step
        assert step is not None
        send_email(api.services, case_id) if step.is_email else advance_case(api.services, case_id)
    assert api.case(case_id).reason_code == "vendor_did_not_act"

    assert api.client.post(f"{page}/original-cancelled").status_code == 303
    assert send_email(api.services, case_id) == "send_link_sent"
    [email] = api.buyer_emails()
    assert LINK in email


def test_the_same_link_again_with_its_order_id_after_the_buyers_email_is_not_a_conflict(api: Api) -> None:
    """The contract: the same URL again answers 303, nothing new; only another URL after the buyer was emailed is
    a 409. A vendor who comes back to add the new order's id (so the buyer's payment is found by it) to the link
    already sent gets a 409 "link already sent" today."""
    case_id = api.tasked()
    page = api.page(case_id)
    api.client.post(f"{page}/link", data={"payment_url": LINK})
    api.client.post(f"{page}/original-cancelled")
    assert send_email(api.services, case_id) == "send_link_sent"

    answer = api.client.post(f"{page}/link", data={"payment_url": LINK, "order_id": "CC-900001"})
    assert answer.status_code == 303
    assert api.case(case_id).payment_url == LINK
    assert len(api.buyer_emails()) == 1


# -- guarantees that hold ---------------------------------------------------------------------------------


def test_every_answer_the_routes_give_carries_the_page_headers_and_no_cookie(api: Api) -> None:
    case_id = api.tasked()
    page = api.page(case_id)
    answers = [
        api.client.get(page), api.client.head(page),
        api.client.post(f"{page}/link", data={"payment_url": "https://evil.example/pay"}),
        api.client.post(f"{page}/link", content=b"payment_url=" + b"a" * 9000, headers=FORM),
        api.client.post(f"{page}/link", data={"payment_url": LINK}),
        api.client.post(f"{page}/link", data={"payment_url": LINK}),
        api.client.get(page + "x"), api.client.post(page + "x/link", data={"payment_url": LINK}),
        api.client.get("/vendor/static/page.css"), api.client.get("/vendor/static/page.js"),
        api.client.get("/vendor/static/nothing.js"),
        api.client.post(f"{page}/original-cancelled"),
    ]
    assert send_email(api.services, case_id) == "send_link_sent"
    answers.append(api.client.post(f"{page}/link", data={"payment_url": OTHER_LINK}))
    assert [a.status_code for a in answers] == [200, 200, 400, 400, 303, 303, 404, 404, 200, 200, 404, 303, 409]
    for answer in answers:
        assert_page_headers(answer)


@pytest.mark.parametrize("headers", [
    {"Host": "evil.example"},
    {"Host": "evil.example:443", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
    {"Forwarded": "host=evil.example;proto=https"},
])
def test_the_redirect_after_a_form_is_relative_whatever_host_is_claimed(api: Api, headers: dict[str, str]) -> None:
    page = api.page(api.tasked())
    for action, data in (("link", {"payment_url": LINK}), ("original-cancelled", {})):
        answer = api.client.post(f"{page}/{action}", data=data, headers=headers)
        assert answer.status_code == 303 and answer.headers["location"] == page


@pytest.mark.parametrize(("body", "content_type"), [
    (b"payment_url=" + b"x" * (8 * 1024), "application/x-www-form-urlencoded"),
    (b"&".join(b"f%d=1" % n for n in range(25)) + b"&payment_url=" + LINK.encode(),
     "application/x-www-form-urlencoded"),
    (b"payment_url=\xff\xfe" + LINK.encode(), "application/x-www-form-urlencoded"),
    (b"--b\r\nContent-Disposition: form-data; name=\"payment_url\"\r\n\r\n" + LINK.encode() + b"\r\n--b--\r\n",
     "multipart/form-data; boundary=b"),
    (json.dumps({"payment_url": LINK}).encode(), "application/json"),
    (b"payment_url=%FF%FE", "application/x-www-form-urlencoded"),
])
def test_a_form_that_is_not_a_small_urlencoded_link_is_refused_and_records_nothing(
        api: Api, body: bytes, content_type: str) -> None:
    case_id = api.tasked()
    answer = api.client.post(f"{api.page(case_id)}/link", content=body, headers={"Content-Type": content_type})
    assert answer.status_code == 400
    assert_page_headers(answer)
    case = api.case(case_id)
    assert case.payment_url is None and case.state is CaseState.AWAITING_VENDOR_LINK


def test_a_streamed_body_without_a_length_is_cut_off_at_the_limit(api: Api) -> None:
    case_id = api.tasked()

    def chunks() -> Iterator[bytes]:
        yield b"payment_url=" + LINK.encode() + b"&pad="
        for _ in range(200):
            yield b"p" * 1024

    answer = api.client.post(f"{api.page(case_id)}/original-cancelled", content=chunks(), headers=FORM)
    assert answer.status_code == 400
    assert not api.case(case_id).original_known_cancelled


def test_a_token_opens_its_own_case_only_and_none_signed_with_another_key(api: Api) -> None:
    first, second = api.tasked("CC-1001"), api.tasked("CC-1002")
    token = api.page(first).rsplit("/", 1)[1]
    foreign = VendorTokens("another-secret-key-of-at-least-32-chars!").token(second)
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    for bad in (foreign, altered, token + "/", token.upper(), f"{token}.{token}", second, " " + token):
        for answer in (api.client.get(f"/vendor/cases/{bad}"),
                       api.client.post(f"/vendor/cases/{bad}/link", data={"payment_url": LINK}),
                       api.client.post(f"/vendor/cases/{bad}/original-cancelled")):
            assert answer.status_code == 404, bad
            assert "Not Found" in answer.text and first not in answer.text and second not in answer.text
    assert api.client.post(f"/vendor/cases/{token}/link", data={"payment_url": LINK}).status_code == 303
    assert api.case(first).payment_url == LINK
    untouched = api.case(second)
    assert untouched.payment_url is None and not untouched.original_known_cancelled


def test_a_case_of_a_vendor_whose_replacements_go_through_the_order_api_has_no_page(api: Api) -> None:
    opened = api.deliver(ipn("payment.failed", 3, order_id="CC-5005"), vendor="acme")
    assert opened == "case_opened"
    with api.services.uow() as uow:
        case = uow.cases.latest_for_order("acme", "CC-5005")
    assert case is not None
    page = api.page(case.id)
    assert api.client.get(page).status_code == 404
    assert api.client.post(f"{page}/original-cancelled").status_code == 404
    assert not api.case(case.id).original_known_cancelled


def test_once_the_case_ended_its_token_answers_404_and_changes_nothing(api: Api) -> None:
    case_id = api.tasked()
    page = api.page(case_id)
    assert api.deliver(ipn("payment.made", 3)).startswith("original_paid")
    assert api.case(case_id).state is CaseState.RESOLVED
    events = len(api.case(case_id).events)
    for answer in (api.client.get(page), api.client.post(f"{page}/link", data={"payment_url": LINK}),
                   api.client.post(f"{page}/original-cancelled"), api.client.post(f"{page}/cannot-generate")):
        assert answer.status_code == 404
        assert_page_headers(answer)
    case = api.case(case_id)
    assert case.payment_url is None and not case.original_known_cancelled and len(case.events) == events


def test_the_vendor_clicking_everything_at_once_gets_the_buyer_one_email_with_the_last_link(api: Api) -> None:
    """Two browser tabs, a double click and a worker sending due emails, all at the same time: each answer is a
    redirect, a refusal of a late other link (409) or a busy case (503); the buyer receives exactly one email,
    and its link is the one the case holds."""
    case_id = api.tasked()
    page = api.page(case_id)
    stop = threading.Event()
    sent: list[str] = []

    def worker() -> None:
        while not stop.is_set():
            sent.append(send_email(api.services, case_id))

    def click(n: int) -> int:
        with TestClient(create_app(api.services), base_url="http://127.0.0.1:8000",
                        follow_redirects=False) as tab:
            if n % 3 == 2:
                answer = tab.post(f"{page}/original-cancelled")
            else:
                answer = tab.post(f"{page}/link", data={"payment_url": LINK if n % 2 else OTHER_LINK})
            return int(answer.status_code)

    running = threading.Thread(target=worker)
    running.start()
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(pool.map(click, range(18)))
    finally:
        stop.set()
        running.join(timeout=30)
    api.clock.now += timedelta(seconds=1)
    send_email(api.services, case_id)

    assert set(statuses) <= {303, 409, 503}, statuses
    case = api.case(case_id)
    assert case.state is CaseState.AWAITING_PAYMENT
    [email] = api.buyer_emails()
    assert case.payment_url is not None and case.payment_url in email
    assert (OTHER_LINK if case.payment_url == LINK else LINK) not in email
