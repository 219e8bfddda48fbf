"""The vendor's daily summary: the figures side by side, the cases for a person, and a chart mail clients draw."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date, timedelta

import pytest

from adapters.email.preview import SAMPLE_DAY, sample_vendor_summary
from adapters.email.reasons import REASONS, UNKNOWN
from adapters.email.render import (
    CHART_HEIGHT,
    ChartDay,
    EmailRenderer,
    PersonCase,
    SummaryFigures,
    VendorSummaryContext,
    chart_days,
)
from domain.money import Money
from tests.unit.email.htmlparts import Parsed


def figures(**changes: object) -> SummaryFigures:
    base = SummaryFigures(opened=12, links_sent=11, recovered=5, recovered_amount=Money(123456, "EUR"), lost=3,
                          recovery_rate=0.625)
    return replace(base, **changes)  # type: ignore[arg-type]


def summary(locale: str = "en", **changes: object) -> VendorSummaryContext:
    base = replace(sample_vendor_summary(locale),
                   yesterday=figures(opened=2, links_sent=1, recovered=1, recovered_amount=Money(4900, "EUR"),
                                     lost=0, recovery_rate=1.0),
                   last_30_days=figures(), waiting=17)
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("locale", "rows"), [
    ("de", ["Neue Fälle 2 12", "Zahlungslinks gesendet 1 11", "Zurückgewonnen 1 5",
            "Zurückgewonnener Betrag 49,00 € 1.234,56 €", "Verloren 0 3", "Erfolgsquote 100,0 % 62,5 %"]),
    ("en", ["Cases opened 2 12", "Payment links sent 1 11", "Recovered 1 5",
            "Amount recovered €49.00 €1,234.56", "Lost 0 3", "Recovery rate 100.0% 62.5%"]),
])
def test_yesterday_and_30_days_side_by_side_in_both_parts(
        renderer: EmailRenderer, locale: str, rows: list[str]) -> None:
    email = renderer.vendor_summary(summary(locale))
    text = " ".join(email.text.split())
    html = Parsed(email.html).visible

    for row in rows:
        assert row in text
        assert row in html


@pytest.mark.parametrize(("locale", "waiting", "day"), [("de", "Zahlung derzeit ausstehend: 17.", "1. Oktober 2026"),
                                                         ("en", "Waiting for payment now: 17.", "October 1, 2026")])
def test_waiting_and_the_day_are_shown(renderer: EmailRenderer, locale: str, waiting: str, day: str) -> None:
    email = renderer.vendor_summary(summary(locale))
    tiles = Parsed(email.html).with_class("tile")

    assert waiting in email.text
    assert len(tiles) == 3
    assert day in email.subject
    assert "17" in Parsed(email.html).visible


def test_no_rate_when_nothing_ended(renderer: EmailRenderer) -> None:
    email = renderer.vendor_summary(summary("de", yesterday=figures(recovered=0, lost=0, recovery_rate=None)))

    assert re.search(r"Erfolgsquote +– +62,5 %", email.text)


# A value for every parameter a reason's message may take, as the domain records them for the summary.
PARAMS = {"installment": 2, "amount": Money(4900, "EUR"), "attempts": 8, "status": "cancelled",
          "installments": "1, 2", "days": 14, "order": "CC-77", "cases": 2, "waiting_for": "link"}


@pytest.mark.parametrize("locale", ["de", "en"])
@pytest.mark.parametrize("code", sorted(REASONS))
def test_every_reason_code_says_why_and_what_to_do_in_the_vendors_language(
        renderer: EmailRenderer, code: str, locale: str) -> None:
    email = renderer.vendor_summary(summary(locale, needs_person=(PersonCase("case-7", "CC-7", code, PARAMS),)))
    why = "Warum:" if locale == "de" else "Why:"
    [line] = [line.strip() for line in email.text.splitlines() if line.strip().startswith(why)]
    html = Parsed(email.html).visible

    assert "dunlink cases show case-7" not in email.text, "a known code is worded, not sent to the fallback"
    assert code not in email.text and code not in email.html
    assert line.removeprefix(why).strip() in html
    if "%(amount)s" in REASONS[code][0]:
        assert ("49,00 €" if locale == "de" else "€49.00") in line
    if "%(installment)s" in REASONS[code][0]:
        assert ("Rate 2 " if locale == "de" else "nstallment 2 ") in line


def test_the_german_summary_words_the_reasons_and_amounts_for_a_german_reader(renderer: EmailRenderer) -> None:
    cases = (PersonCase("case-1", "CC-1", "paid_twice", {"amount": Money(4900, "EUR")}),
             PersonCase("case-2", "CC-2", "charged_back_after_replacement", {"installment": 2}),
             PersonCase("case-3", "CC-3", "create_replacement_failed", {"attempts": 1}))
    email = renderer.vendor_summary(summary("de", needs_person=cases))
    text, html = " ".join(email.text.split()), Parsed(email.html).visible

    for part in (text, html):
        assert "Warum: Der Käufer hat die ursprüngliche und die neue Bestellung bezahlt (49,00 € auf die neue " \
               "Bestellung)." in part
        assert "Was zu tun ist: Erstatten Sie eine der beiden Zahlungen auf der Plattform" in part
        assert "Warum: Rate 2 der ursprünglichen Bestellung wurde zurückgebucht" in part
        assert "Warum: Die Plattform hat die neue Bestellung abgelehnt" in part
        assert "EUR" not in part and "49.00" not in part and "charged" not in part


@pytest.mark.parametrize(("locale", "fallback"), [
    ("de", "Warum: Dieser Fall ist manuell zu klären: siehe 'dunlink cases show case-9'."),
    ("en", "Why: This case needs a person: see 'dunlink cases show case-9'."),
])
@pytest.mark.parametrize(("code", "params"), [
    ("vendor_mismatch", {"vendor": "other"}),  # a code this release does not word
    (None, {}),  # handed over before reasons had codes
    ("paid_twice", {}),  # its amount missing (not recorded, or not an amount of the case's currency)
])
def test_an_unknown_reason_falls_back_to_one_general_line_in_the_vendors_language(
        renderer: EmailRenderer, locale: str, fallback: str, code: str | None, params: dict[str, object]) -> None:
    email = renderer.vendor_summary(summary(locale, needs_person=(PersonCase("case-9", "CC-9", code, params),)))

    assert fallback in " ".join(email.text.split())
    assert fallback.replace("'", "&#39;") in email.html or fallback in Parsed(email.html).visible
    assert "vendor_mismatch" not in email.text and "paid_twice" not in email.text


def test_the_fallback_is_in_the_table_format() -> None:
    why, what_to_do = UNKNOWN
    assert "%(case)s" in why and what_to_do


def test_no_case_for_a_person_says_so(renderer: EmailRenderer) -> None:
    email = renderer.vendor_summary(summary("en", needs_person=()))

    assert "No case needs you right now." in email.text
    assert "No case needs you right now." in Parsed(email.html).visible


def bars(html: str) -> list[int]:
    """The height of each day's bar, in pixels, as the HTML draws it (0 for an empty day)."""
    parsed = Parsed(html)
    heights: list[int] = []
    for tag, attrs in parsed.elements:
        if "chart-day" in attrs.get("class", "").split():
            heights.append(0)
        elif tag == "td" and "bar" in attrs.get("class", "").split():
            assert heights[-1] == 0, "one bar per day"
            heights[-1] = int(attrs["height"])
            assert f"height: {attrs['height']}px" in attrs["style"].replace("height:", "height: ").replace("  ", " ")
    return heights


def test_the_chart_has_30_bars_whose_heights_follow_the_amounts(renderer: EmailRenderer) -> None:
    cents = [0, 1, 5000, 10000, 2500, 0, 20000, 7500] + [100 * n for n in range(22)]
    chart = tuple(ChartDay(SAMPLE_DAY - timedelta(days=29 - n), Money(c, "EUR")) for n, c in enumerate(cents))
    email = renderer.vendor_summary(summary("en", chart=chart))
    heights = bars(email.html)

    assert len(heights) == 30
    assert heights[6] == CHART_HEIGHT  # the best day fills the chart
    assert heights[3] == CHART_HEIGHT // 2 and heights[2] == CHART_HEIGHT // 4
    assert heights[0] == 0 and heights[5] == 0
    assert heights[1] > 0, "a cent still shows"
    for (a, ha) in zip(cents, heights, strict=True):
        for (b, hb) in zip(cents, heights, strict=True):
            if a < b:
                assert ha <= hb
    for cell in Parsed(email.html).with_class("bar"):
        assert cell["bgcolor"] == "#0f766e" and "background-color: #0f766e" in cell["style"]


def test_the_text_part_gives_the_chart_as_a_table(renderer: EmailRenderer) -> None:
    cents = [100 * n for n in range(30)]
    chart = tuple(ChartDay(SAMPLE_DAY - timedelta(days=29 - n), Money(c, "EUR")) for n, c in enumerate(cents))
    email = renderer.vendor_summary(summary("en", chart=chart))
    rows = re.findall(r"^([A-Z][a-z]{2} \d{1,2}) +(€\d+\.\d\d) *(#*)$", email.text, re.M)

    assert len(rows) == 30
    assert rows[0] == ("Sep 2", "€0.00", "")
    assert rows[-1][:2] == ("Oct 1", "€29.00")
    assert [len(bar) for _, _, bar in rows] == sorted(len(bar) for _, _, bar in rows)
    assert "Total: €435.00, highest day: €29.00 (Oct 1)" in email.text


def test_chart_days_fill_the_days_without_payments() -> None:
    chart = chart_days(date(2026, 3, 1), {date(2026, 2, 28): Money(500, "EUR")}, "EUR")

    assert len(chart) == 30
    assert chart[0].day == date(2026, 1, 31) and chart[-1].day == date(2026, 3, 1)
    assert chart[-2].amount == Money(500, "EUR")
    assert sum(entry.amount.minor for entry in chart) == 500


@pytest.mark.parametrize(("changes", "message"), [
    ({"chart": ()}, "chart must hold the 30 days"),
    ({"day": SAMPLE_DAY + timedelta(days=1)}, "chart must hold the 30 days"),
    ({"currency": "USD"}, "every amount"),
    ({"locale": "fr"}, "locale"),
    ({"accent_colour": "red;background:url(x)"}, "accent_colour"),
    ({"logo_url": "http://insecure.example/logo.png"}, "logo_url"),
])
def test_a_summary_that_would_mislead_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        replace(summary("en"), **changes)  # type: ignore[arg-type]


def test_impossible_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="recovery_rate"):
        figures(recovery_rate=1.5)
