"""The vendor page as its vendor reads it and as the browser's Content-Security-Policy judges it: every state in
both languages, the facts of the task with a copy button each, the forms that still apply, the problem with a
refused link, and text from IPNs shown as text."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from adapters.email.preview import SAMPLE_PAGE_URL
from adapters.email.render import LOCALES
from adapters.web.preview import PAGE_STATES, SAMPLE_PAYMENT_URL, sample_page
from adapters.web.vendor_page import (
    ASSETS,
    CONTENT_SECURITY_POLICY,
    PAGE_HEADERS,
    STATIC_PATH,
    VendorPage,
    VendorPageContext,
)
from tests.unit.email.htmlparts import Parsed

EVERY = [(state, locale) for state in PAGE_STATES for locale in LOCALES]
LEFTOVERS = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")
PAGE_PATH = SAMPLE_PAGE_URL.removeprefix("http://127.0.0.1:8000")
HEADLINES = {
    "link": {"de": "dunlink wartet auf Sie: den Zahlungslink", "en": "dunlink is waiting for you: the payment link"},
    "original_cancelled": {"de": "dunlink wartet auf Sie: ursprüngliche Bestellung CC-1874 stornieren",
                           "en": "dunlink is waiting for you: cancel the original order CC-1874"},
    "person": {"de": "Dieser Fall ist manuell zu klären", "en": "This case waits for a person"},
    "buyer_payment": {"de": "Ihr Teil ist erledigt: dunlink wartet auf die Zahlung des Käufers",
                      "en": "Done on your side: dunlink is waiting for the buyer to pay"},
    "ended": {"de": "Dieser Fall ist abgeschlossen: Der Käufer hat bezahlt", "en": "This case is over: the buyer paid"},
}

# What each copy button of the sample page copies, besides ids and amounts: the country as its name, for the drop-down.
BUYER = {
    "de": {"buyer-first-name": "Anna", "buyer-last-name": "Meier", "buyer-email": "anna.meier@example.de",
           "buyer-country": "Deutschland", "product-name": "Yoga-Lehrerausbildung 200h", "interval": "monatlich"},
    "en": {"buyer-first-name": "Emma", "buyer-last-name": "Clarke", "buyer-email": "emma.clarke@example.co.uk",
           "buyer-country": "United Kingdom", "product-name": "Yoga Teacher Training 200h", "interval": "monthly"},
}


@pytest.fixture(scope="module")
def page() -> VendorPage:
    return VendorPage()


def forms(parsed: Parsed) -> dict[str, dict[str, str]]:
    """The page's forms by the last part of their action."""
    return {attrs["action"].rsplit("/", 1)[1]: attrs for attrs in parsed.tags("form")}


@pytest.mark.parametrize(("state", "locale"), EVERY)
def test_every_state_renders_in_both_languages_and_says_what_dunlink_waits_for(
        page: VendorPage, state: str, locale: str) -> None:
    html = page.render(sample_page(locale, state))
    parsed = Parsed(html)

    assert html.startswith("<!DOCTYPE html>")
    assert not LEFTOVERS.search(html)
    assert parsed.tags("html")[0]["lang"] == locale
    [headline] = re.findall(r'<h1 id="status-title">([^<]*)</h1>', html)
    assert headline == HEADLINES[state][locale]
    for fact in ("CC-1874", "7b2c91e4", "Lumen Yoga Academy"):
        assert fact in parsed.visible
    assert {"de": "441,00 €", "en": "€441.00"}[locale] in parsed.visible


@pytest.mark.parametrize("state", PAGE_STATES)
def test_the_german_page_has_no_english_left(page: VendorPage, state: str) -> None:
    parsed = Parsed(page.render(sample_page("de", state)))
    english = re.compile(r"\b(the|your|you|and|with|of|to|is|Copy|Payment|Buyer|Order|Save|Link to)\b")

    assert not english.search(parsed.visible), english.search(parsed.visible)
    assert not [attrs["aria-label"] for attrs in parsed.tags("button") if english.search(attrs.get("aria-label", ""))]


@pytest.mark.parametrize(("state", "locale"), EVERY)
def test_the_page_runs_under_its_content_security_policy(page: VendorPage, state: str, locale: str) -> None:
    """No inline script, style or handler, and nothing loaded from elsewhere but the vendor's https logo."""
    html = page.render(sample_page(locale, state, task=replace(sample_page(locale).task,
                                                               logo_url="https://cdn.example.com/logo.png")))
    parsed = Parsed(html)

    assert "style=" not in html and "<style" not in html
    assert [attrs for attrs in parsed.tags("script") if not attrs.get("src")] == []
    assert not re.search(r"\son[a-z]+=", html)
    assert "javascript:" not in html
    assert [attrs["src"] for attrs in parsed.tags("script")] == [f"{STATIC_PATH}page.js"]
    assert [attrs["href"] for attrs in parsed.tags("link")] == [f"{STATIC_PATH}page.css"]
    assert [attrs["src"] for attrs in parsed.tags("img")] == ["https://cdn.example.com/logo.png"]
    assert all(attrs["action"].startswith("/vendor/cases/") for attrs in parsed.tags("form"))
    assert PAGE_HEADERS["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "style-src 'self'" in CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("locale", LOCALES)
def test_waiting_for_the_link_offers_every_form_posting_to_the_pages_own_paths(page: VendorPage,
                                                                              locale: str) -> None:
    parsed = Parsed(page.render(sample_page(locale, "link")))

    found = forms(parsed)
    assert set(found) == {"link", "original-cancelled", "cannot-generate"}
    assert {attrs["action"] for attrs in found.values()} == {
        f"{PAGE_PATH}/link", f"{PAGE_PATH}/original-cancelled", f"{PAGE_PATH}/cannot-generate"}
    assert all(attrs["method"] == "post" for attrs in found.values())
    inputs = {attrs["name"]: attrs for attrs in parsed.tags("input")}
    assert set(inputs) == {"payment_url", "order_id"}
    assert inputs["payment_url"]["type"] == "url" and "required" in inputs["payment_url"]
    assert "required" not in inputs["order_id"]
    labels = {attrs["for"] for attrs in parsed.tags("label")}
    assert labels == {"payment_url", "order_id"} == {inputs["payment_url"]["id"], inputs["order_id"]["id"]}
    assert {"de": "Ich habe die ursprüngliche Bestellung CC-1874 storniert",
            "en": "I cancelled the original order CC-1874"}[locale] in parsed.visible


def test_explicit_form_actions_are_used_as_given(page: VendorPage) -> None:
    ctx = sample_page("en", "link", link_action="/v/t/link", cancelled_action="/v/t/cancelled",
                      cannot_generate_action="/v/t/cannot")

    assert {attrs["action"] for attrs in Parsed(page.render(ctx)).tags("form")} == {
        "/v/t/link", "/v/t/cancelled", "/v/t/cannot"}


@pytest.mark.parametrize("locale", LOCALES)
def test_every_buyer_field_and_amount_has_a_copy_button_hidden_until_the_script_runs(page: VendorPage,
                                                                                     locale: str) -> None:
    parsed = Parsed(page.render(sample_page(locale, "link")))
    buttons = {attrs["data-target"]: attrs for attrs in parsed.with_class("copy")}
    amount, total = {"de": ("147,00", "441,00"), "en": ("147.00", "441.00")}[locale]

    assert {key: attrs["data-copy"] for key, attrs in buttons.items()} == {
        "original-order": "CC-1874", **BUYER[locale], "product-id": "7b2c91e4", "installments": "3",
        "amount-1": amount, "amount-2": amount, "amount-3": amount, "total": total,
    }
    assert all("hidden" in attrs and attrs["type"] == "button" for attrs in buttons.values())
    ids = {attrs.get("id") for _, attrs in parsed.elements}
    assert set(buttons) <= ids, "every button copies a value shown on the page"
    assert all(attrs["aria-label"] for attrs in buttons.values())


@pytest.mark.parametrize("locale", LOCALES)
def test_every_installment_is_shown_with_its_due_date(page: VendorPage, locale: str) -> None:
    visible = Parsed(page.render(sample_page(locale, "link"))).visible

    for number, due in ((1, {"de": "1. Oktober 2026", "en": "October 1, 2026"}),
                        (2, {"de": "31. Oktober 2026", "en": "October 31, 2026"}),
                        (3, {"de": "30. November 2026", "en": "November 30, 2026"})):
        label = {"de": f"Rate {number}, fällig am {due['de']}", "en": f"Installment {number}, due {due['en']}"}
        assert label[locale] in visible
    numbered = re.findall(r"<li(?: class=\"done\")?>([^<]+)", page.render(sample_page(locale, "link")))
    assert len(numbered) == 7


HOSTILE = {
    "buyer_first_name": '<script>alert("x")</script>',
    "buyer_last_name": "Clarke\n\nIMPORTANT: pay elsewhere",
    "product_name": '"><img src=x onerror=alert(1)>',
    "product_id": "7b2c<b>91e4</b>",
    "buyer_email": "emma@example.com\u202e",
    "order_id": "CC-1874\r\n<i>x</i>",
}


@pytest.mark.parametrize(("state", "locale"), EVERY)
def test_hostile_buyer_and_product_text_is_shown_as_text_on_one_line(page: VendorPage, state: str,
                                                                    locale: str) -> None:
    ctx = sample_page(locale, state)
    html = page.render(replace(ctx, task=replace(ctx.task, **HOSTILE)))  # type: ignore[arg-type]
    parsed = Parsed(html)

    assert [attrs for attrs in parsed.tags("script") if attrs.get("src") != f"{STATIC_PATH}page.js"] == []
    assert [attrs for attrs in parsed.tags("img")] == []
    assert not {"b", "i"} & {tag for tag, _ in parsed.elements}
    assert "onerror" not in {name for _, attrs in parsed.elements for name in attrs}
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "Clarke IMPORTANT: pay elsewhere" in parsed.visible
    assert "CC-1874 &lt;i&gt;x&lt;/i&gt;" in html
    assert "\u202e" not in html
    copies = {attrs["data-target"]: attrs["data-copy"] for attrs in parsed.with_class("copy")}
    assert copies["buyer-first-name"] == '<script>alert("x")</script>'
    assert copies["buyer-last-name"] == "Clarke IMPORTANT: pay elsewhere"


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(("problem", "host", "expected"), [
    ("not_a_url", None, {"de": "Das ist keine Webadresse.", "en": "That is not a web address."}),
    ("scheme_not_allowed", None, {"de": "Der Link muss mit https:// beginnen.",
                                  "en": "The link must start with https://."}),
    ("host_not_allowed", "pay.evil.example",
     {"de": "Links zu pay.evil.example werden nicht angenommen. Der Link muss hierhin führen: copecart.com, "
            "copecart.de.",
      "en": "Links to pay.evil.example are not accepted. The link must point to: copecart.com, copecart.de."}),
    ("host_not_allowed", None, {"de": "Links zu dieser Adresse werden nicht angenommen.",
                                "en": "Links to this address are not accepted."}),
    ("link_already_sent", None, {"de": "bereits per E-Mail erhalten, daher kann er nicht mehr geändert werden",
                                 "en": "already been emailed the recorded link, so it can no longer be changed"}),
])
def test_a_refused_link_is_explained_at_the_link_form(page: VendorPage, locale: str, problem: str,
                                                      host: str | None, expected: dict[str, str]) -> None:
    state = "original_cancelled" if problem == "link_already_sent" else "link"
    ctx = sample_page(locale, state, problem=problem, problem_host=host,
                      allowed_hosts=("copecart.com", "copecart.de"))
    html = page.render(ctx)
    parsed = Parsed(html)

    [alert] = re.findall(r'<p class="problem" id="payment_url-problem" role="alert">(.*?)</p>', html, re.S)
    assert expected[locale] in " ".join(alert.split())
    [url_input] = [attrs for attrs in parsed.tags("input") if attrs["name"] == "payment_url"]
    assert url_input["aria-invalid"] == "true"
    assert "payment_url-problem" in url_input["aria-describedby"].split()
    assert html.index('id="payment_url-problem"') < html.index('id="payment_url"')
    assert {"de": "Ihr Link wurde nicht gespeichert", "en": "Your link was not saved"}[locale] in parsed.visible


def test_without_a_problem_nothing_alarms(page: VendorPage) -> None:
    html = page.render(sample_page("en", "link"))

    assert "payment_url-problem" not in html and "aria-invalid" not in html and 'role="alert"' not in html


@pytest.mark.parametrize("locale", LOCALES)
def test_a_recorded_link_is_shown_and_may_be_replaced_until_the_buyer_has_it(page: VendorPage, locale: str) -> None:
    waiting = Parsed(page.render(sample_page(locale, "original_cancelled")))
    emailed = Parsed(page.render(sample_page(locale, "buyer_payment")))

    for parsed in (waiting, emailed):
        assert SAMPLE_PAYMENT_URL in [attrs["href"] for attrs in parsed.tags("a")]
        assert {"de": "Neue Bestellnummer: CC-2041", "en": "New order ID: CC-2041"}[locale] in parsed.visible
        assert "cannot-generate" not in forms(parsed)
    assert set(forms(waiting)) == {"link", "original-cancelled"}
    assert {"de": "Link ersetzen", "en": "Replace the link"}[locale] in waiting.visible
    assert set(forms(emailed)) == set()
    assert {"de": "ist als storniert bekannt", "en": "is known cancelled"}[locale] in emailed.visible
    links = [attrs for attrs in emailed.tags("a") if attrs["href"] == SAMPLE_PAYMENT_URL]
    assert all("noreferrer" in attrs["rel"] for attrs in links)


@pytest.mark.parametrize("locale", LOCALES)
def test_when_the_phone_offer_cannot_make_a_link_the_exception_steps_show(page: VendorPage, locale: str) -> None:
    parsed = Parsed(page.render(sample_page(locale, "person")))
    without = Parsed(page.render(sample_page(locale, "link")))

    for words in ("DunningCopeCart", "support@copecart.com", "7b2c91e4"):
        assert words in parsed.visible
    assert "mailto:support@copecart.com" in [attrs["href"] for attrs in parsed.tags("a")]
    assert {"de": "Bis dahin ist dieser Fall manuell zu klären",
            "en": "Until then this case waits for a person"}[locale] in parsed.visible
    assert set(forms(parsed)) == {"link", "original-cancelled"}
    assert "DunningCopeCart" not in without.visible


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(("ended_as", "expected"), [
    ("recovered", {"de": "Der Käufer hat bezahlt", "en": "the buyer paid"}),
    ("lost", {"de": "deaktivieren Sie ihn dort", "en": "deactivate it there"}),
    ("resolved", {"de": "manuell geklärt", "en": "settled by a person"}),
    ("cancelled", {"de": "wurde abgebrochen", "en": "was cancelled"}),
])
def test_an_ended_case_offers_no_form(page: VendorPage, locale: str, ended_as: str, expected: dict[str, str]) -> None:
    parsed = Parsed(page.render(sample_page(locale, "ended", ended_as=ended_as, original_cancelled=False)))

    assert expected[locale] in parsed.visible
    assert parsed.tags("form") == [] and parsed.tags("input") == []


@pytest.mark.parametrize(("changes", "message"), [
    ({"waiting_for": "nothing"}, "waiting_for"),
    ({"waiting_for": "ended", "ended_as": None}, "ended_as"),
    ({"ended_as": "recovered"}, "ended_as"),
    ({"waiting_for": "ended", "ended_as": "won"}, "ended_as"),
    ({"problem": "too_long"}, "problem"),
    ({"payment_url": "javascript:alert(1)"}, "payment_url"),
    ({"link_action": "https://evil.example/steal"}, "link_action"),
    ({"cancelled_action": "//evil.example/steal"}, "cancelled_action"),
    ({"cannot_generate_action": '/x" onclick="alert(1)'}, "cannot_generate_action"),
])
def test_a_page_that_could_mislead_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(sample_page("en", "link"), **changes)  # type: ignore[arg-type]


def test_the_assets_are_served_with_their_types_and_nothing_else(page: VendorPage) -> None:
    css, css_type = page.asset("page.css")
    js, js_type = page.asset("page.js")

    assert set(ASSETS) == {"page.css", "page.js"}
    assert css_type == "text/css; charset=utf-8" and b"overflow-wrap: anywhere" in css
    assert js_type == "text/javascript; charset=utf-8" and b"navigator.clipboard" in js
    for name in ("page.html", "../page.html", "static/page.css", ""):
        with pytest.raises(KeyError):
            page.asset(name)


def test_rendering_is_the_same_every_time(page: VendorPage) -> None:
    contexts: list[VendorPageContext] = [sample_page(locale, state) for state, locale in EVERY]

    assert [page.render(ctx) for ctx in contexts] == [VendorPage().render(ctx) for ctx in contexts]
