"""Every email, in both languages: renders from sample data, shows webhook text as text, fails loudly on a
missing variable, carries the vendor's branding in inline styles and has a preheader."""

from __future__ import annotations

import os
import re
from dataclasses import fields, replace
from importlib import resources

import pytest
from babel.messages.extract import extract_from_file
from babel.messages.pofile import read_po
from jinja2 import UndefinedError

from adapters.email import reasons
from adapters.email.preview import sample
from adapters.email.render import EMAILS, LOCALES, EmailRenderer, PersonCase, RenderedEmail, VendorSummaryContext
from tests.unit.email.htmlparts import Parsed

EVERY = [(name, locale) for name in EMAILS for locale in LOCALES]
LEFTOVERS = re.compile(r"\{\{|\}\}|\{%|%\}|\{#|#\}")


@pytest.mark.parametrize(("name", "locale"), EVERY)
def test_renders_with_sample_data_and_no_template_syntax_left(renderer: EmailRenderer, name: str, locale: str) -> None:
    email = renderer.email(sample(name, locale))

    assert email.subject and "\n" not in email.subject
    assert email.text.strip() and email.html.strip()
    for part in (email.subject, email.text, email.html):
        assert not LEFTOVERS.search(part), part
    assert Parsed(email.html).tags("html")[0]["lang"] == locale


@pytest.mark.parametrize(("name", "locale"), EVERY)
def test_css_is_inlined_and_carries_the_accent_colour(renderer: EmailRenderer, name: str, locale: str) -> None:
    ctx = replace(sample(name, locale), accent_colour="#a21caf")
    html = renderer.email(ctx).html
    parsed = Parsed(html)

    assert "<style" not in html  # clients drop it: nothing may depend on it
    assert "class=\"card\"" in html
    card = parsed.with_class("card")[0]
    assert "border-top: 4px solid #a21caf" in card["style"]
    assert all(attrs.get("style") for attrs in parsed.tags("td")), "every cell gets its look inline"
    assert "#a21caf" in parsed.with_class("brand")[0]["style"]


@pytest.mark.parametrize(("name", "locale"), EVERY)
def test_has_a_preheader_that_is_hidden_from_the_body(renderer: EmailRenderer, name: str, locale: str) -> None:
    parsed = Parsed(renderer.email(sample(name, locale)).html)

    assert len(parsed.preheader) > 20
    assert parsed.preheader not in parsed.visible
    assert "display: none" in parsed.with_class("preheader")[0]["style"]


@pytest.mark.parametrize(("name", "locale"), EVERY)
def test_markup_in_names_and_products_is_shown_as_text(renderer: EmailRenderer, name: str, locale: str) -> None:
    changes: dict[str, object] = {"vendor_name": "<b>x</b>", "imprint": "<b>x</b>\nACME <i>GmbH</i>"}
    ctx = sample(name, locale)
    if isinstance(ctx, VendorSummaryContext):
        changes["needs_person"] = (PersonCase("<b>x</b>", "<b>x</b>", None),
                                   PersonCase("c-2", "<b>x</b>", "paid_after_cancel", {"installment": "<b>x</b>"}))
    else:
        outside = ("buyer_first_name", "buyer_last_name", "buyer_email", "product_name", "product_id", "order_id",
                   "new_order_id")
        changes.update(dict.fromkeys({f.name for f in fields(ctx)} & set(outside), "<b>x</b>"))
    email = renderer.email(replace(ctx, **changes))  # type: ignore[arg-type]

    assert "<b>" not in email.html
    assert "&lt;b&gt;x&lt;/b&gt;" in email.html
    assert "ACME &lt;i&gt;GmbH&lt;/i&gt;" in email.html
    assert not {"b", "i"} & {tag for tag, _ in Parsed(email.html).elements}
    assert "<b>x</b>" in email.text  # plain text is not markup: it reads as typed


@pytest.mark.parametrize(("name", "locale"), EVERY)
def test_a_missing_variable_fails_loudly(renderer: EmailRenderer, name: str, locale: str) -> None:
    ctx = sample(name, locale)
    values = {field.name: getattr(ctx, field.name) for field in fields(ctx)}
    values["buyer_name"] = "Anna Meier"
    values.update(bars=(), chart_total=None, chart_peak=None)
    missing = {"payment_link": "outstanding", "reminder": "expires_on", "final_notice": "expires_on",
               "vendor_summary": "waiting", "vendor_task": "total", "vendor_reminder": "waiting_for",
               "vendor_deactivate_link": "why"}[name]
    del values[missing]

    with pytest.raises(UndefinedError, match=missing):
        renderer.render(name, locale, values)


@pytest.mark.parametrize("name", EMAILS)
def test_german_emails_have_no_english_left(renderer: EmailRenderer, name: str) -> None:
    email = renderer.email(sample(name, "de"))  # the reasons for a person included: they are catalogue text
    english = re.compile(r"\b(the|your|you|and|with|of|Hello|Amount|Recovered|Yesterday|Reminder|Payment)\b")

    for text in (email.subject, email.text, Parsed(email.html).visible, Parsed(email.html).preheader):
        assert not english.search(text), english.search(text)


def test_every_template_string_has_a_german_translation() -> None:
    root = resources.files("templates")
    with root.joinpath("locale/de/LC_MESSAGES/messages.po").open("rb") as po:
        catalog = read_po(po, locale="de")
    options = {"extensions": "jinja2.ext.i18n", "trim_blocks": "true", "lstrip_blocks": "true"}
    msgids = set()
    for templates in ("email", "vendor_page"):  # one catalog for the emails and the vendor page
        folder = os.fspath(root.joinpath(templates))  # type: ignore[call-overload]
        for directory, _, names in os.walk(folder):
            for template in (name for name in names if name.endswith((".html", ".txt"))):
                for _, message, _, _ in extract_from_file("jinja2", os.path.join(directory, template),
                                                          options=options):
                    msgids.add(message)
    for _, message, _, _ in extract_from_file("python", reasons.__file__, keywords={"N_": None}):
        msgids.add(message)
    assert set(reasons.UNKNOWN) | {m for pair in reasons.REASONS.values() for m in pair} <= msgids

    assert len(msgids) > 50
    assert [m for m in msgids if not (entry := catalog.get(m)) or not entry.string] == []
    assert [m.id for m in catalog if m.id and m.id not in msgids] == [], "catalog entries no template uses"


@pytest.mark.parametrize("name", ["payment_link", "reminder", "final_notice"])
def test_a_logo_replaces_the_name_and_keeps_it_as_alt_text(renderer: EmailRenderer, name: str) -> None:
    ctx = replace(sample(name, "en"), logo_url="https://cdn.example.com/logo.png", vendor_name='A "quoted" <b>x</b>')
    parsed = Parsed(renderer.email(ctx).html)

    [logo] = parsed.tags("img")
    assert logo["src"] == "https://cdn.example.com/logo.png"
    assert logo["alt"] == 'A "quoted" <b>x</b>'
    assert "height: 40px" in logo["style"]


@pytest.mark.parametrize(("accent", "button_text"), [("#0f766e", "#ffffff"), ("#ffd400", "#1f2328")])
def test_button_text_stays_readable_on_any_accent(renderer: EmailRenderer, accent: str, button_text: str) -> None:
    parsed = Parsed(renderer.email(replace(sample("reminder", "en"), accent_colour=accent)).html)

    buttons = [attrs for attrs in parsed.tags("a") if "inline-block" in attrs["style"]]
    assert len(buttons) == 1
    assert f"color: {button_text}" in buttons[0]["style"]


def test_rendering_is_the_same_every_time(renderer: EmailRenderer) -> None:
    first: list[RenderedEmail] = [renderer.email(sample(name, locale)) for name, locale in EVERY]
    again = [EmailRenderer().email(sample(name, locale)) for name, locale in EVERY]

    assert first == again
