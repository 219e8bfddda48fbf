"""What the buyer reads in the payment-link email, in both languages and both parts."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from html.parser import HTMLParser

import pytest
from jinja2 import UndefinedError

from adapters.email.render import EmailRenderer, PaymentLinkContext, RenderedEmail, ScheduleLine
from domain.money import Money

URL = "http://127.0.0.1:8090/pay/CC-1002"


def context(locale: str = "en", **changes: object) -> PaymentLinkContext:
    schedule = tuple(ScheduleLine(n, Money(5000, "EUR"), date(2026, 9 + n, 1)) for n in range(1, 4))
    base = PaymentLinkContext(
        case_id="case-17", locale=locale, vendor_name="ACME Academy", buyer_first_name="Anna",
        buyer_last_name="Meier", product_name="Coaching Program", outstanding=Money(20000, "EUR"),
        installments_left=4, schedule=(ScheduleLine(0, Money(5000, "EUR"), date(2026, 9, 1)), *schedule),
        payment_url=URL, reply_to="support@acme.example", order_id="CC-1001",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


class _Links(HTMLParser):
    """The links and visible text of an HTML part, as a mail client would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "a":
            self.anchors.append(dict(attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(html: str) -> _Links:
    links = _Links()
    links.feed(html)
    return links


@pytest.mark.parametrize(("locale", "owed", "left", "due"), [
    ("de", "200,00 €", "Verbleibende Raten: 4", "1. Oktober 2026"),
    ("en", "€200.00", "Installments left: 4", "October 1, 2026"),
])
def test_both_parts_show_amount_link_product_installments_and_schedule(
        renderer: EmailRenderer, locale: str, owed: str, left: str, due: str) -> None:
    email = renderer.payment_link(context(locale))

    for part in (email.text, email.html):
        assert owed in part
        assert URL in part
        assert "Coaching Program" in part
        assert left in part
        assert due in part
    assert "Coaching Program" in email.subject
    # The button, the copyable link, and the vendor's reply-to address in the footer (no imprint here).
    assert [anchor["href"] for anchor in parsed(email.html).anchors] == [URL, URL, "mailto:support@acme.example"]


def test_german_email_has_no_english_left(renderer: EmailRenderer) -> None:
    email = renderer.payment_link(context("de"))

    assert email.subject.startswith("Ihre Zahlung für Coaching Program")
    for english in ("Installments", "Amount still owed", "Hello", "Pay securely", "due"):
        assert english not in email.text
        assert english not in "".join(parsed(email.html).text)


def test_markup_from_webhooks_is_shown_as_text(renderer: EmailRenderer) -> None:
    email = renderer.payment_link(context("de", buyer_first_name="<b>x</b>", product_name="<i>Kurs</i>"))

    assert "&lt;b&gt;x&lt;/b&gt;" in email.html
    assert "<b>" not in email.html
    assert "<i>" not in email.html
    assert {"b", "i"}.isdisjoint(parsed(email.html).tags)
    assert "<b>x</b>" in email.text  # plain text is not markup: the name reads as typed


def test_a_link_with_quotes_and_ampersands_stays_one_attribute(renderer: EmailRenderer) -> None:
    url = 'https://pay.example/p?order=CC-1&sig=a"b"onmouseover="x'
    email = renderer.payment_link(context("en", payment_url=url, reply_to=None))

    anchors = parsed(email.html).anchors
    assert [anchor["href"] for anchor in anchors] == [url, url]
    assert all(set(anchor) == {"href", "target", "rel", "style"} for anchor in anchors)
    assert url in email.text


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://pay.example/p?a=1\nIMPORTANT: pay elsewhere",
                                 "https://pay.example/p?a=1 b", "https://pay.example/p?a=1\x00"])
def test_only_web_links_that_nothing_can_split_are_accepted(url: str) -> None:
    with pytest.raises(ValueError, match="payment_url"):
        context("en", payment_url=url)


def test_single_payment_shows_the_due_date_without_a_schedule(renderer: EmailRenderer) -> None:
    single = (ScheduleLine(1, Money(20000, "EUR"), date(2026, 10, 1)),)
    email = renderer.payment_link(context("en", schedule=single))

    for part in (email.text, email.html):
        assert "To be paid in one payment of €200.00, due October 1, 2026." in part
        assert "Installment 1:" not in part


@pytest.mark.parametrize(("locale", "shown"), [("de", "5.000 ¥"), ("en", "¥5,000")])
def test_yen_has_no_decimals(renderer: EmailRenderer, locale: str, shown: str) -> None:
    email = renderer.payment_link(context(locale, outstanding=Money(5000, "JPY"), schedule=()))

    assert shown in email.text
    assert shown in email.html


def test_a_missing_variable_fails_instead_of_rendering_blank(renderer: EmailRenderer) -> None:
    values = {"vendor_name": "ACME", "buyer_first_name": "Anna", "product_name": "X", "payment_url": URL,
              "installments_left": 1, "schedule": (), "reply_to": None}  # no "outstanding"

    with pytest.raises(UndefinedError, match="outstanding"):
        renderer.render("payment_link", "en", values)


def test_reply_hint_only_when_replies_reach_someone(renderer: EmailRenderer) -> None:
    with_reply: RenderedEmail = renderer.payment_link(context("en"))
    without: RenderedEmail = renderer.payment_link(context("en", reply_to=None))

    assert "Just reply to this email" in with_reply.text
    assert "Just reply to this email" not in without.text
    assert "Just reply to this email" not in without.html


def test_unknown_locale_is_refused(renderer: EmailRenderer) -> None:
    with pytest.raises(ValueError, match="locale"):
        renderer.render("payment_link", "fr", {})
