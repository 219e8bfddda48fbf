"""What makes a buyer trust an email: their own order number and the product in both parts, the vendor's imprint
and help link in the footer; and what keeps text from webhooks from writing lines of its own into it."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import replace

import pytest

from adapters.email.preview import sample
from adapters.email.render import LOCALES, EmailRenderer, PaymentLinkContext, PersonCase, RenderedEmail
from tests.unit.email.htmlparts import Parsed

BUYER_EMAILS = ("payment_link", "reminder", "final_notice")
EVERY = [(name, locale) for name in BUYER_EMAILS for locale in LOCALES]
IMPRINT = ("ACME Academy GmbH\nMusterstraße 1, 10115 Berlin\nAmtsgericht Charlottenburg, HRB 12345 B\n"
           "USt-IdNr.: DE123456789")
HELP = "https://acme.example/help?topic=payments&lang=de"
FACTS = {"de": ["Produkt: Coaching Program", "Ihre Bestellnummer: CC-1001", "Neue Bestellnummer: CC-900001"],
         "en": ["Product: Coaching Program", "Your order number: CC-1001", "New order number: CC-900001"]}
_FOOTER = re.compile(r'<td class="footer"[^>]*>(.*?)</td>', re.S)


def buyer_email(renderer: EmailRenderer, name: str, locale: str, **changes: object) -> RenderedEmail:
    ctx = replace(sample(name, locale), **changes)  # type: ignore[arg-type]
    return renderer.email(ctx)


def footer_html(html: str) -> str:
    found = _FOOTER.search(html)
    assert found is not None
    return " ".join(found.group(1).split())


def footer_text(text: str) -> str:
    return text.split("\n-- \n", 1)[1]


@pytest.mark.parametrize(("name", "locale"), EVERY)
def test_both_parts_name_the_buyers_order_the_new_order_and_the_product(
        renderer: EmailRenderer, name: str, locale: str) -> None:
    email = buyer_email(renderer, name, locale, order_id="CC-1001", new_order_id="CC-900001",
                        product_name="Coaching Program")

    for part in (email.text, Parsed(email.html).visible):
        for fact in FACTS[locale]:
            assert fact in part, (fact, part)
    assert "Coaching Program" in email.subject


@pytest.mark.parametrize("locale", LOCALES)
def test_without_a_new_order_only_the_buyers_own_order_is_named(renderer: EmailRenderer, locale: str) -> None:
    email = buyer_email(renderer, "payment_link", locale, order_id="CC-1001", new_order_id=None)

    assert FACTS[locale][1] in email.text and FACTS[locale][1] in Parsed(email.html).visible
    for part in (email.text, Parsed(email.html).visible):
        assert FACTS[locale][2].split(":")[0] not in part


def test_an_email_without_the_buyers_order_number_is_refused() -> None:
    with pytest.raises(ValueError, match="order_id"):
        replace(sample("payment_link", "en"), order_id=" ")


@pytest.mark.parametrize(("name", "locale"), EVERY)
def test_the_footer_carries_the_imprint_line_by_line_and_the_help_link(
        renderer: EmailRenderer, name: str, locale: str) -> None:
    email = buyer_email(renderer, name, locale, imprint=IMPRINT, support_url=HELP)
    text, html = footer_text(email.text), footer_html(email.html)

    assert IMPRINT in text  # the lines as the vendor wrote them
    assert f"{HELP}\n" in text
    lines = [line.strip() for line in re.split(r"<br>", html.split("</p>", 1)[0].split(">", 1)[1])]
    assert lines == IMPRINT.split("\n")
    assert f'href="{HELP.replace("&", "&amp;")}"' in html
    help_label = {"de": "Hilfe und Kontakt:", "en": "Help and contact:"}[locale]
    assert f"{help_label} {HELP}" in text
    assert f"{help_label} {HELP}" in Parsed(email.html).visible


@pytest.mark.parametrize(("name", "locale"), EVERY)
def test_without_an_imprint_the_footer_names_the_vendor_and_its_reply_to_address(
        renderer: EmailRenderer, name: str, locale: str) -> None:
    email = buyer_email(renderer, name, locale, vendor_name="ACME Academy", imprint=None, support_url=None,
                        reply_to="support@acme.example")
    text, html = footer_text(email.text), footer_html(email.html)

    assert text.startswith("ACME Academy\nsupport@acme.example\n")
    assert "ACME Academy" in html and '<a href="mailto:support@acme.example"' in html
    assert "http" not in text


@pytest.mark.parametrize("locale", LOCALES)
def test_the_vendor_summary_shows_the_imprint_buyers_see_or_says_it_is_missing(
        renderer: EmailRenderer, locale: str) -> None:
    with_imprint = renderer.email(replace(sample("vendor_summary", locale), imprint=IMPRINT))
    without = renderer.email(replace(sample("vendor_summary", locale), imprint=None))

    assert IMPRINT in with_imprint.text
    assert "Amtsgericht Charlottenburg, HRB 12345 B" in footer_html(with_imprint.html)
    missing = {"de": "Ihre E-Mails an Käufer enthalten kein Impressum",
               "en": "Your emails to buyers carry no imprint"}[locale]
    assert missing in without.text and missing in Parsed(without.html).visible
    assert missing not in with_imprint.text


@pytest.mark.parametrize(("changes", "message"), [
    ({"support_url": "javascript:alert(1)"}, "support_url"),
    ({"support_url": "http://acme.example/help"}, "support_url"),
    ({"support_url": 'https://acme.example/"onmouseover="x'}, "support_url"),
    ({"imprint": "ACME GmbH\x1b[2J"}, "imprint"),
    ({"imprint": "ACME GmbH\n\u202eHRB 1"}, "imprint"),
    ({"imprint": "x" * 1001}, "imprint"),
    ({"imprint": "\n".join(["line"] * 13)}, "imprint"),
])
def test_a_footer_that_could_mislead_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(sample("payment_link", "en"), **changes)  # type: ignore[arg-type]


def test_a_loopback_help_link_is_fine_for_rehearsals() -> None:
    ctx = replace(sample("payment_link", "en"), support_url="http://127.0.0.1:8000/help")
    assert isinstance(ctx, PaymentLinkContext)


# -- text from outside ----------------------------------------------------------------------------------------

INJECTED = "Anna\n\nIMPORTANT: pay at https://evil.example/pay instead"
HOSTILE = {
    "buyer_first_name": INJECTED,
    "buyer_last_name": "Meier\r\nBcc: victim@example.com",
    "product_name": "Yoga\u2028IMPORTANT\x00 course\x1b[31m \u202egnp.exe\u202c\x85IMPORTANT",
    "order_id": "CC-1001\nIMPORTANT",
    "new_order_id": "CC-900001\x0bIMPORTANT",
    "vendor_name": "ACME\nIMPORTANT",
}


def assert_no_line_of_its_own(text: str) -> None:
    """Nothing from outside starts a line, and no control character but the template's own line ends is left."""
    assert not [line for line in text.splitlines() if line.lstrip().startswith("IMPORTANT")], text
    assert [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Zl", "Zp")] == []
    assert "\u202e" not in text and "\u202c" not in text


@pytest.mark.parametrize(("name", "locale"), EVERY)
def test_line_breaks_and_controls_from_webhooks_fold_into_spaces_in_both_parts_and_the_subject(
        renderer: EmailRenderer, name: str, locale: str) -> None:
    email = buyer_email(renderer, name, locale, **HOSTILE)

    for part in (email.subject, email.text, email.html):
        assert_no_line_of_its_own(part)
    assert "\n" not in email.subject
    hello = {"de": "Hallo", "en": "Hello"}[locale]
    assert f"{hello} Anna IMPORTANT: pay at https://evil.example/pay instead," in email.text
    assert "Yoga IMPORTANT course [31m gnp.exe IMPORTANT" in email.text
    assert "CC-1001 IMPORTANT" in email.text and "CC-900001 IMPORTANT" in email.text
    assert "Yoga IMPORTANT course [31m gnp.exe IMPORTANT" in Parsed(email.html).visible


@pytest.mark.parametrize("locale", LOCALES)
def test_ids_in_the_vendor_summary_fold_too(renderer: EmailRenderer, locale: str) -> None:
    cases = (PersonCase("case-1\nIMPORTANT", "CC-1\r\nIMPORTANT", None),
             PersonCase("case-2", "CC-2", "paid_after_cancel", {"installment": "2\n\nIMPORTANT"}))
    email = renderer.email(replace(sample("vendor_summary", locale), vendor_name="ACME\nIMPORTANT",
                                   needs_person=cases))

    for part in (email.subject, email.text, email.html):
        assert_no_line_of_its_own(part)
    assert "CC-1 IMPORTANT" in email.text and "2 IMPORTANT" in email.text


def test_an_imprint_keeps_its_lines_and_nothing_else(renderer: EmailRenderer) -> None:
    imprint = "\n\n ACME GmbH  \n\n\n\nMusterstraße 1 \n"
    email = buyer_email(renderer, "payment_link", "en", imprint=imprint)

    assert footer_text(email.text).startswith("ACME GmbH\n\nMusterstraße 1\n")
