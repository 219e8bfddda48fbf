"""What the buyer reads in a reminder and in the final notice: the same link, the amount, the deadline."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adapters.email.preview import sample_final_notice, sample_reminder
from adapters.email.render import EmailRenderer, FinalNoticeContext, ReminderContext
from domain.money import Money
from tests.unit.email.htmlparts import Parsed

URL = "https://pay.example.com/checkout/CC-2041?token=7Hq2xv&lang=de"


# What both emails are checked against, in place of the samples' own link, amount and count.
LINK: dict[str, object] = {"payment_url": URL, "outstanding": Money(20000, "EUR"), "installments_left": 3}


def reminder(locale: str, **changes: object) -> ReminderContext:
    return replace(sample_reminder(locale), **{**LINK, **changes})  # type: ignore[arg-type]


def final_notice(locale: str, **changes: object) -> FinalNoticeContext:
    return replace(sample_final_notice(locale), **{**LINK, **changes})  # type: ignore[arg-type]


CASES = [("de", "200,00 €", "Verbleibende Raten: 3", "15. Oktober 2026"),
         ("en", "€200.00", "Installments left: 3", "October 15, 2026")]


@pytest.mark.parametrize(("locale", "owed", "left", "until"), CASES)
def test_reminder_shows_link_amount_product_installments_and_validity(
        renderer: EmailRenderer, locale: str, owed: str, left: str, until: str) -> None:
    ctx = reminder(locale)
    email = renderer.reminder(ctx)
    parsed = Parsed(email.html)

    for part in (email.text, parsed.visible):
        assert owed in part
        assert ctx.product_name in part
        assert left in part
        assert until in part
    assert URL in email.text
    assert [anchor["href"] for anchor in parsed.tags("a")] == [URL, URL, ctx.support_url]  # and help, in the footer
    assert URL in parsed.visible  # the copyable link, verbatim
    assert ctx.product_name in email.subject


def test_reminder_words_a_second_nudge_differently(renderer: EmailRenderer) -> None:
    first = renderer.reminder(reminder("en", reminder_number=1))
    second = renderer.reminder(reminder("en", reminder_number=2))

    assert "friendly reminder" in first.text
    assert "once more" in second.text
    assert "once more" not in first.text


@pytest.mark.parametrize(("locale", "owed", "left", "day"), CASES)
def test_final_notice_names_the_cancellation_day(
        renderer: EmailRenderer, locale: str, owed: str, left: str, day: str) -> None:
    ctx = final_notice(locale)
    email = renderer.final_notice(ctx)
    parsed = Parsed(email.html)

    assert day in email.subject
    for part in (email.text, parsed.visible):
        assert owed in part
        assert left in part
        assert ctx.product_name in part
        assert day in part
    assert URL in email.text
    assert [anchor["href"] for anchor in parsed.tags("a")] == [URL, URL, ctx.support_url]  # and help, in the footer
    expected = {"de": "Bleibt die Zahlung aus, wird die Bestellung am 15. Oktober 2026 storniert.",
                "en": "The order will be cancelled on October 15, 2026 if it is still unpaid then."}[locale]
    assert expected in email.text and expected in parsed.visible


def test_contexts_extend_the_payment_link_and_check_it() -> None:
    with pytest.raises(ValueError, match="payment_url"):
        reminder("en", payment_url="javascript:alert(1)")
    with pytest.raises(ValueError, match="reminder_number"):
        reminder("en", reminder_number=0)
    with pytest.raises(ValueError, match="locale"):
        final_notice("fr")
