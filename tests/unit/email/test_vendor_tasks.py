"""The vendor's task emails, read as the vendor reads them: every amount to type into CopeCart's phone offer, in the
vendor's locale and in both parts; the buyer's details one per line, ready to copy; the steps in CopeCart's words;
the button to the case's page; and text from IPNs kept to one line and shown as text."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date

import pytest

from adapters.email.preview import SAMPLE_PAGE_URL, sample, sample_vendor_deactivate_link, sample_vendor_reminder
from adapters.email.render import (
    LOCALES,
    EmailRenderer,
    RenderedEmail,
    ScheduleLine,
    VendorDeactivateContext,
    VendorReminderContext,
    VendorTaskContext,
)
from domain.money import Money
from tests.unit.email.htmlparts import Parsed

TASK_EMAILS = ("vendor_task", "vendor_reminder", "vendor_deactivate_link")
UNEVEN = (ScheduleLine(1, Money(123457, "EUR"), date(2026, 10, 1)),
          ScheduleLine(2, Money(123456, "EUR"), date(2026, 11, 1)))
AMOUNTS = {"de": ("1.234,57 €", "1.234,56 €", "2.469,13 €"), "en": ("€1,234.57", "€1,234.56", "€2,469.13")}
DUE = {"de": ("1. Oktober 2026", "1. November 2026"), "en": ("October 1, 2026", "November 1, 2026")}
LABELS = {"de": ("Vorname", "Nachname", "E-Mail", "Land"), "en": ("First name", "Last name", "Email", "Country")}
STEPS = {
    "de": ("Telefon-Angebot", "„Link zur Bestellzahlung generieren“",
           "Stornieren Sie die ursprüngliche Bestellung CC-1874"),
    "en": ("Telefon-Angebot", "“Generate a link for order payment”", "Cancel the original order CC-1874"),
}
_MONO = re.compile(r"font-family: ui-monospace")


def task(locale: str, /, **changes: object) -> VendorTaskContext:
    ctx = sample("vendor_task", locale)
    assert isinstance(ctx, VendorTaskContext)
    return replace(ctx, **changes)  # type: ignore[arg-type]


def link_reminder(locale: str, **changes: object) -> VendorReminderContext:
    return replace(sample_vendor_reminder(locale), waiting_for="link", **changes)  # type: ignore[arg-type]


def parts(email: RenderedEmail) -> tuple[str, str]:
    return email.text, Parsed(email.html).visible


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("build", [task, link_reminder])
def test_every_amount_and_due_date_is_in_both_parts_formatted_for_the_locale(
        renderer: EmailRenderer, locale: str, build: object) -> None:
    ctx = build(locale, schedule=UNEVEN, total=Money(246913, "EUR"))  # type: ignore[operator]
    first, second, total = AMOUNTS[locale]
    number = {"de": "Rate", "en": "Installment"}[locale]
    due = {"de": "fällig am", "en": "due"}[locale]

    email = renderer.email(ctx)

    for part in parts(email):
        assert f"{number} 1, {due} {DUE[locale][0]}" in part
        assert f"{number} 2, {due} {DUE[locale][1]}" in part
        assert first in part and second in part and total in part
        assert {"de": "Anzahl der Raten", "en": "Number of installments"}[locale] in part
    # Each line of the text part pairs the installment with its amount, as the vendor types them in.
    assert re.search(rf"^{number} 1, {due} {re.escape(DUE[locale][0])} +{re.escape(first)}$", email.text, re.M)
    assert re.search(rf"^{number} 2, {due} {re.escape(DUE[locale][1])} +{re.escape(second)}$", email.text, re.M)


@pytest.mark.parametrize("locale", LOCALES)
def test_a_single_payment_asks_for_one_amount(renderer: EmailRenderer, locale: str) -> None:
    single = (ScheduleLine(1, Money(44100, "EUR"), date(2026, 10, 1)),)
    email = renderer.vendor_task(task(locale, replacement="single_payment", schedule=single, frequency=None))
    amount = {"de": "441,00 €", "en": "€441.00"}[locale]

    for part in parts(email):
        assert {"de": f"Einmalzahlung, fällig am {DUE[locale][0]}", "en": f"Single payment, due {DUE[locale][0]}"
                }[locale] in part
        assert {"de": f"Geben Sie eine Einmalzahlung von {amount} ein.",
                "en": f"Enter one single payment of {amount}."}[locale] in part
        assert {"de": "Anzahl der Raten", "en": "Number of installments"}[locale] not in part


@pytest.mark.parametrize("locale", LOCALES)
def test_the_buyers_details_are_one_per_line_in_text_and_one_per_monospace_cell_in_html(
        renderer: EmailRenderer, locale: str) -> None:
    ctx = task(locale, buyer_first_name="Zoë", buyer_last_name="Müller-Lüdenscheidt",
               buyer_email="zoe.mueller@example.de", buyer_country_code="AT")
    email = renderer.vendor_task(ctx)
    country = {"de": "Österreich (AT)", "en": "Austria (AT)"}[locale]
    values = ("Zoë", "Müller-Lüdenscheidt", "zoe.mueller@example.de", country)

    lines = email.text.splitlines()
    for label, value in zip(LABELS[locale], values, strict=True):
        assert any(re.fullmatch(rf"{re.escape(label)} +{re.escape(value)}", line) for line in lines), (label, value)
    cells = re.findall(r'<td class="copy-value"[^>]*>([^<]*)</td>', email.html)
    assert [cell.strip() for cell in cells[:4]] == list(values)
    assert all(_MONO.search(attrs["style"]) for attrs in Parsed(email.html).with_class("copy-value"))
    for part in parts(email):
        assert "CC-1874" in part and ctx.product_id in part and ctx.product_name in part


def test_a_buyer_without_a_country_shows_a_dash_rather_than_nothing(renderer: EmailRenderer) -> None:
    email = renderer.vendor_task(task("en", buyer_country_code=None))

    assert re.search(r"^Country +–$", email.text, re.M)


@pytest.mark.parametrize("locale", LOCALES)
def test_the_steps_are_numbered_in_copecarts_words_and_the_button_opens_the_page_verbatim(
        renderer: EmailRenderer, locale: str) -> None:
    email = renderer.vendor_task(task(locale))

    numbered = [line for line in email.text.splitlines() if re.match(r"^[1-7]\. ", line)]
    assert [line[:2] for line in numbered] == [f"{n}." for n in range(1, 8)]
    for part in parts(email):
        for words in STEPS[locale]:
            assert words in part
        assert {"de": "dunlink schreibt dem Käufer erst, wenn der Link eingefügt und die ursprüngliche Bestellung "
                      "storniert ist", "en": "dunlink emails the buyer only once the link is pasted and the original "
                                             "order is cancelled"}[locale] in part
    buttons = [attrs for attrs in Parsed(email.html).tags("a") if "inline-block" in attrs.get("style", "")]
    assert [button["href"] for button in buttons] == [SAMPLE_PAGE_URL]
    assert f"\n{SAMPLE_PAGE_URL}\n" in email.text


@pytest.mark.parametrize("name", TASK_EMAILS)
def test_a_buyer_name_with_a_line_break_stays_on_one_line_and_markup_is_text(renderer: EmailRenderer,
                                                                            name: str) -> None:
    ctx = replace(sample(name, "en"), buyer_first_name="Emma\n\nIMPORTANT: pay <b>elsewhere</b>",  # type: ignore[arg-type]
                  buyer_last_name="Clarke\r\nBcc: x@example.com", product_name="Yoga\u2028<i>course</i>")
    email = renderer.email(ctx)

    for part in (email.subject, email.text, email.html):
        assert not [line for line in part.splitlines() if line.lstrip().startswith(("IMPORTANT", "Bcc"))]
    assert "Emma IMPORTANT: pay <b>elsewhere</b> Clarke Bcc: x@example.com" in email.subject
    assert "Emma IMPORTANT: pay <b>elsewhere</b>" in email.text
    assert "<b>" not in email.html and "<i>" not in email.html
    assert "Emma IMPORTANT: pay &lt;b&gt;elsewhere&lt;/b&gt;" in email.html
    assert "Yoga &lt;i&gt;course&lt;/i&gt;" in email.html


@pytest.mark.parametrize("locale", LOCALES)
def test_the_reminder_about_the_original_order_says_the_buyer_could_pay_twice(renderer: EmailRenderer,
                                                                             locale: str) -> None:
    email = renderer.vendor_reminder(sample_vendor_reminder(locale))

    assert email.subject == {"de": "Bitte stornieren Sie Bestellung CC-1874: Anna Meier könnte doppelt belastet werden",
                             "en": "Please cancel order CC-1874: Emma Clarke could be charged twice"}[locale]
    for part in parts(email):
        assert {"de": "seit 2 Tagen", "en": "(2 days now)"}[locale] in part
        assert {"de": "doppelt belastet", "en": "charged twice"}[locale] in part


@pytest.mark.parametrize("locale", LOCALES)
def test_the_reminder_about_a_missing_link_repeats_the_whole_task(renderer: EmailRenderer, locale: str) -> None:
    email = renderer.vendor_reminder(link_reminder(locale, days_waiting=1))

    assert email.subject.startswith({"de": "Erinnerung: Der Zahlungslink für", "en": "Reminder: the payment link for"
                                     }[locale])
    for part in parts(email):
        assert {"de": "seit 1 Tag auf", "en": "waiting 1 day for"}[locale] in part
        for words in STEPS[locale]:
            assert words in part


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(("why", "new_order_id", "expected"), [
    ("expired", "CC-2041", {"de": "Der Fall der Bestellung CC-1874 ist beendet",
                            "en": "The case of order CC-1874 has ended"}),
    ("original_paid", None, {"de": "hat die ursprüngliche Bestellung CC-1874 doch noch bezahlt",
                             "en": "paid the original order CC-1874 after all"}),
])
def test_the_request_to_deactivate_names_the_link_and_why(renderer: EmailRenderer, locale: str, why: str,
                                                          new_order_id: str | None, expected: dict[str, str]) -> None:
    ctx = replace(sample_vendor_deactivate_link(locale), why=why, new_order_id=new_order_id)
    email = renderer.vendor_deactivate_link(ctx)

    for part in parts(email):
        assert expected[locale] in part
        assert ctx.payment_url in part
        assert {"de": "dunlink kann Links in CopeCart nicht deaktivieren",
                "en": "dunlink cannot deactivate links in CopeCart"}[locale] in part
        assert ("CC-2041" in part) is (new_order_id is not None)
    # The page may be gone with the case: the email points to CopeCart only.
    assert ctx.page_url not in email.text and ctx.page_url not in email.html


@pytest.mark.parametrize(("changes", "message"), [
    ({"locale": "fr"}, "locale"),
    ({"page_url": "javascript:alert(1)"}, "page_url"),
    ({"page_url": "https://dunlink.example/vendor/cases/a b"}, "page_url"),
    ({"page_url": "https://dunlink.example/vendor/cases/a\nb"}, "page_url"),
    ({"order_id": " "}, "order_id"),
    ({"schedule": ()}, "schedule"),
    ({"total": Money(44101, "EUR")}, "add up"),
    ({"total": Money(44100, "USD")}, "currency"),
    ({"replacement": "refund"}, "replacement"),
    ({"replacement": "single_payment"}, "single payment"),
    ({"frequency": "fortnightly"}, "frequency"),
    ({"buyer_country_code": "Germany"}, "buyer_country_code"),
    ({"logo_url": "http://cdn.example.com/logo.png"}, "logo_url"),
])
def test_a_task_that_could_mislead_the_vendor_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        task("en", **changes)


@pytest.mark.parametrize(("build", "changes", "message"), [
    (sample_vendor_reminder, {"waiting_for": "buyer_payment"}, "waiting_for"),
    (sample_vendor_reminder, {"days_waiting": -1}, "days_waiting"),
    (sample_vendor_deactivate_link, {"why": "lost"}, "why"),
    (sample_vendor_deactivate_link, {"payment_url": "data:text/html,x"}, "payment_url"),
])
def test_reminders_and_deactivations_check_their_own_fields(build: object, changes: dict[str, object],
                                                            message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(build("en"), **changes)  # type: ignore[operator]


def test_email_picks_the_renderer_of_each_task_context(renderer: EmailRenderer) -> None:
    reminder, deactivate = sample_vendor_reminder("en"), sample_vendor_deactivate_link("en")

    assert isinstance(reminder, VendorTaskContext) and isinstance(deactivate, VendorDeactivateContext)
    assert renderer.email(reminder) == renderer.vendor_reminder(reminder)
    assert renderer.email(deactivate) == renderer.vendor_deactivate_link(deactivate)
    assert renderer.email(task("en")) == renderer.vendor_task(task("en"))
