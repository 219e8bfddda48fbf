"""Rendering emails from the Jinja2 templates shipped in the ``templates`` package.

English is the source language inside ``{% trans %}`` blocks; other languages come from a ``.po``
catalog read with Babel and compiled in memory, so a plain ``pip install`` is enough: no ``.mo`` build
step to forget. Money and dates are formatted by Babel for the vendor's locale, the way the buyer
writes them (de ``200,00 €``, en ``€200.00``).

Every text from outside (buyer and product names, order ids, reasons: webhooks and the platform; names and
the imprint: the vendors file) passes one boundary, :func:`_from_outside`, before any template sees it: line
breaks and other control characters fold into a space, so no field can start a line of its own in the text
part or the subject ("Hallo Anna⏎⏎IMPORTANT: pay at ... instead"), and bidirectional overrides are dropped.
Only the imprint keeps its line breaks. The HTML part escapes it all besides.

Templates keep their CSS in one ``<style>`` block of the base (readable, one place to change the look);
at render time css-inline copies every rule into ``style`` attributes and drops the block, because Gmail,
Outlook and most webmail clients ignore or strip ``<style>``.
"""

from __future__ import annotations

import gettext
import io
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from importlib import resources
from typing import Any

from babel.core import Locale
from babel.dates import format_date, format_skeleton
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency, format_decimal, format_percent, get_decimal_symbol
from css_inline import CSSInliner
from jinja2 import Environment, PackageLoader, StrictUndefined, Undefined, select_autoescape

from adapters.email.footer import imprint_problem, is_support_url
from adapters.email.reasons import WordedReason, word_reason
from domain.money import Money

LOCALES = ("de", "en")
SOURCE_LOCALE = "en"
DEFAULT_ACCENT = "#1f6feb"
CHART_DAYS = 30
CHART_HEIGHT = 120  # pixels of the tallest bar in the summary's chart
TEXT_BAR_WIDTH = 24  # characters of the tallest bar in the text part's chart

_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
# Babel separates amount and symbol with no-break or narrow no-break spaces; the contract and the
# buyer's search box both expect a plain space.
_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " "})
_BLANKS = re.compile(r"\s+")
# Folded into a space: C0 and C1 controls (line breaks, tabs, NUL, ESC...) and line and paragraph separators.
_FOLDED = frozenset({"Cc", "Zl", "Zp"})
# Dropped: bidirectional embeddings, overrides and isolates, which make text read in another order than written.
_BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))
# Context fields whose text keeps its line breaks.
_MULTILINE = frozenset({"imprint"})
_DARK_TEXT = "#1f2328"
_LIGHT_TEXT = "#ffffff"


@dataclass(frozen=True, slots=True)
class ScheduleLine:
    """One installment of the replacement order, as the buyer will be charged."""

    number: int
    amount: Money
    due_date: date


@dataclass(frozen=True, slots=True)
class PaymentLinkContext:
    """Everything the payment-link email shows; names, product and order ids come from webhooks and the platform
    and are untrusted. ``order_id`` is the buyer's original order, ``new_order_id`` the replacement."""

    case_id: str
    locale: str
    vendor_name: str
    buyer_first_name: str
    buyer_last_name: str
    product_name: str
    outstanding: Money
    installments_left: int
    schedule: tuple[ScheduleLine, ...]
    payment_url: str
    reply_to: str | None
    order_id: str
    accent_colour: str = DEFAULT_ACCENT
    logo_url: str | None = None
    new_order_id: str | None = None
    imprint: str | None = None
    support_url: str | None = None

    def __post_init__(self) -> None:
        if self.locale not in LOCALES:
            raise ValueError(f"locale must be one of {', '.join(LOCALES)}, got {self.locale!r}")
        _check_web_url("payment_url", self.payment_url)
        if not self.order_id.strip():
            raise ValueError("order_id must name the buyer's order: an email without it looks like phishing")
        _check_vendor_fields(self.accent_colour, self.logo_url, self.imprint, self.support_url)


def _check_web_url(name: str, url: str) -> None:
    # The URL lands in an href and the text part verbatim: only web links, never javascript: or data:, and
    # nothing a line break or a space could split.
    if not url.startswith(("https://", "http://")) or not url.isprintable() or any(c.isspace() for c in url):
        raise ValueError(f"{name} must be an http:// or https:// URL without spaces or control characters")


def _check_vendor_fields(accent_colour: str, logo_url: str | None, imprint: str | None,
                         support_url: str | None) -> None:
    if not _COLOUR.match(accent_colour):
        raise ValueError("accent_colour must be a colour such as #1f6feb")
    if logo_url is not None and not logo_url.startswith("https://"):
        raise ValueError("logo_url must be an https:// URL")
    if imprint is not None and (problem := imprint_problem(imprint)) is not None:
        raise ValueError(f"imprint: {problem}")
    if support_url is not None and not is_support_url(support_url):
        raise ValueError("support_url must be an https:// URL (http:// only on a loopback host)")


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReminderContext(PaymentLinkContext):
    """A reminder about the same replacement order: everything of the payment link, and how long it lasts."""

    reminder_number: int
    expires_on: date

    def __post_init__(self) -> None:
        PaymentLinkContext.__post_init__(self)
        if self.reminder_number < 1:
            raise ValueError("reminder_number counts from 1")


@dataclass(frozen=True, slots=True, kw_only=True)
class FinalNoticeContext(PaymentLinkContext):
    """The last email before the replacement order is cancelled on ``expires_on``."""

    expires_on: date


# What a vendor task asks for, and the frequencies a replacement's installments may follow (domain.plans).
REPLACEMENTS = ("remaining_installments", "single_payment")
FREQUENCIES = ("daily", "weekly", "biweekly", "monthly", "quarterly", "half_yearly", "yearly")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True, slots=True)
class VendorTaskContext:
    """What the vendor needs to make the replacement order by hand in CopeCart, which offers no order API.

    ``order_id`` is the buyer's original order (to find and cancel), ``schedule`` exactly what the phone offer
    must ask for, ``page_url`` the case's vendor page where the link is pasted. Buyer and product fields come
    from IPNs and are untrusted.
    """

    case_id: str
    locale: str
    vendor_name: str
    order_id: str
    buyer_first_name: str
    buyer_last_name: str
    buyer_email: str
    buyer_country_code: str | None
    product_id: str
    product_name: str
    replacement: str
    schedule: tuple[ScheduleLine, ...]
    frequency: str | None
    total: Money
    page_url: str
    accent_colour: str = DEFAULT_ACCENT
    logo_url: str | None = None
    imprint: str | None = None
    support_url: str | None = None

    def __post_init__(self) -> None:
        if self.locale not in LOCALES:
            raise ValueError(f"locale must be one of {', '.join(LOCALES)}, got {self.locale!r}")
        _check_web_url("page_url", self.page_url)
        if not self.order_id.strip():
            raise ValueError("order_id must name the buyer's original order: the vendor cancels it by this id")
        if self.replacement not in REPLACEMENTS:
            raise ValueError(f"replacement must be one of {', '.join(REPLACEMENTS)}, got {self.replacement!r}")
        if self.frequency is not None and self.frequency not in FREQUENCIES:
            raise ValueError(f"frequency must be one of {', '.join(FREQUENCIES)} or None, got {self.frequency!r}")
        if self.buyer_country_code is not None and not _COUNTRY.match(self.buyer_country_code):
            raise ValueError(f"buyer_country_code must be two capital letters, got {self.buyer_country_code!r}")
        _check_schedule(self.schedule, self.total, self.replacement)
        _check_vendor_fields(self.accent_colour, self.logo_url, self.imprint, self.support_url)


def _check_schedule(schedule: Sequence[ScheduleLine], total: Money, replacement: str) -> None:
    """The vendor types these amounts into CopeCart: a schedule that does not add up would charge the wrong sum."""
    if not schedule:
        raise ValueError("schedule must hold at least one line: the vendor needs to know what to enter")
    if replacement == "single_payment" and len(schedule) != 1:
        raise ValueError("a single payment has exactly one schedule line")
    if any(line.amount.currency != total.currency for line in schedule):
        raise ValueError(f"every schedule line must be in {total.currency}, the total's currency")
    if any(not line.amount.is_positive for line in schedule):
        raise ValueError("every schedule line must be a positive amount")
    if sum(line.amount.minor for line in schedule) != total.minor:
        raise ValueError("the schedule must add up to the total")


@dataclass(frozen=True, slots=True, kw_only=True)
class VendorReminderContext(VendorTaskContext):
    """The daily nudge while the vendor's part is not done: ``waiting_for`` is ``"link"`` (none pasted yet) or
    ``"original_cancelled"`` (a link is recorded, but until the original order is cancelled the buyer could be
    charged twice, so dunlink does not email them)."""

    waiting_for: str
    days_waiting: int

    def __post_init__(self) -> None:
        VendorTaskContext.__post_init__(self)
        if self.waiting_for not in ("link", "original_cancelled"):
            raise ValueError(f"waiting_for must be 'link' or 'original_cancelled', got {self.waiting_for!r}")
        if self.days_waiting < 0:
            raise ValueError("days_waiting is never negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class VendorDeactivateContext(VendorTaskContext):
    """The link the vendor made must stop working and dunlink cannot stop it: ``why`` is ``"original_paid"`` (the
    buyer paid the original order after all) or ``"expired"`` (the case ended unpaid)."""

    why: str
    payment_url: str
    new_order_id: str | None = None

    def __post_init__(self) -> None:
        VendorTaskContext.__post_init__(self)
        if self.why not in ("original_paid", "expired"):
            raise ValueError(f"why must be 'original_paid' or 'expired', got {self.why!r}")
        _check_web_url("payment_url", self.payment_url)


@dataclass(frozen=True, slots=True)
class SummaryFigures:
    """What happened to a vendor's cases over one period; ``recovery_rate`` is None when no case ended."""

    opened: int
    links_sent: int
    recovered: int
    recovered_amount: Money
    lost: int
    recovery_rate: float | None

    def __post_init__(self) -> None:
        if self.recovery_rate is not None and not 0.0 <= self.recovery_rate <= 1.0:
            raise ValueError(f"recovery_rate is a share between 0 and 1, got {self.recovery_rate!r}")


@dataclass(frozen=True, slots=True)
class PersonCase:
    """A case waiting for a person: why, as a reason code and its parameters (amounts as :class:`Money`).

    The summary words the code through :data:`adapters.email.reasons.REASONS`; a code it does not know, or
    None, is shown as the general line pointing to ``dunlink cases show``.
    """

    case_id: str
    order_id: str
    reason_code: str | None
    params: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChartDay:
    """The amount recovered on one day, in the vendor's time zone."""

    day: date
    amount: Money


@dataclass(frozen=True, slots=True)
class VendorSummaryContext:
    """The vendor's daily summary of ``day``; names, reasons and order ids are shown as text, never markup."""

    vendor_name: str
    locale: str
    day: date
    yesterday: SummaryFigures
    last_30_days: SummaryFigures
    waiting: int
    needs_person: tuple[PersonCase, ...]
    chart: tuple[ChartDay, ...]
    currency: str
    accent_colour: str = DEFAULT_ACCENT
    logo_url: str | None = None
    imprint: str | None = None
    support_url: str | None = None

    def __post_init__(self) -> None:
        if self.locale not in LOCALES:
            raise ValueError(f"locale must be one of {', '.join(LOCALES)}, got {self.locale!r}")
        _check_vendor_fields(self.accent_colour, self.logo_url, self.imprint, self.support_url)
        # A chart with a missing or shifted day would draw a wrong picture without anyone noticing.
        expected = [self.day - timedelta(days=offset) for offset in range(CHART_DAYS - 1, -1, -1)]
        if [entry.day for entry in self.chart] != expected:
            raise ValueError(f"chart must hold the {CHART_DAYS} days ending on {self.day.isoformat()}, oldest first")
        amounts = [entry.amount for entry in self.chart]
        amounts += [self.yesterday.recovered_amount, self.last_30_days.recovered_amount]
        if any(amount.currency != self.currency for amount in amounts):
            raise ValueError(f"every amount of the summary must be in {self.currency}")
        if any(entry.amount.minor < 0 for entry in self.chart):
            raise ValueError("the chart shows amounts recovered, which are never negative")


def chart_days(day: date, recovered: Mapping[date, Money], currency: str) -> tuple[ChartDay, ...]:
    """The 30 chart entries ending on ``day``, with zero for days that recovered nothing.

    Queries naturally return only the days that had payments; this fills in the rest so the chart keeps
    its shape.
    """
    start = day - timedelta(days=CHART_DAYS - 1)
    return tuple(
        ChartDay(current, recovered.get(current, Money.zero(currency)))
        for current in (start + timedelta(days=offset) for offset in range(CHART_DAYS))
    )


@dataclass(frozen=True, slots=True)
class _Bar:
    """One day of the chart as drawn: pixel height in HTML, character count in text."""

    day: date
    amount: Money
    height: int
    text_width: int


def chart_bars(chart: Sequence[ChartDay]) -> tuple[_Bar, ...]:
    """Scale the amounts to the tallest day; any day with money gets at least a sliver, so it shows."""
    highest = max((entry.amount.minor for entry in chart), default=0)

    def scaled(minor: int, full: int) -> int:
        if minor <= 0 or highest <= 0:
            return 0
        return max(1, (minor * full + highest // 2) // highest)

    return tuple(
        _Bar(entry.day, entry.amount, max(2, scaled(entry.amount.minor, CHART_HEIGHT)) if entry.amount.minor else 0,
             scaled(entry.amount.minor, TEXT_BAR_WIDTH))
        for entry in chart
    )


def format_money(amount: Money, locale: str) -> str:
    """An amount as a buyer of ``locale`` writes it, with a plain space, never losing a minor unit."""
    formatted = format_currency(Decimal(amount.decimal_string()), amount.currency, locale=locale,
                                decimal_quantization=False)
    return str(formatted).translate(_SPACES)


def format_day(day: date, locale: str) -> str:
    """A date spelled out (de ``1. Oktober 2026``, en ``October 1, 2026``) so no one reads 10/1 as 1 Oct."""
    return str(format_date(day, "long", locale=locale)).translate(_SPACES)


def format_share(share: float | None, locale: str) -> str:
    """A share such as a recovery rate as a percentage of ``locale`` (de ``42,5 %``, en ``42.5%``); ``–`` if None."""
    if share is None:
        return "–"
    pattern = str(Locale.parse(locale).percent_formats[None].pattern).replace("#,##0", "#,##0.0")
    return str(format_percent(share, format=pattern, locale=locale)).translate(_SPACES)


def format_plain_amount(amount: Money, locale: str) -> str:
    """An amount as typed into a form field of ``locale``: no symbol, no grouping (de ``1470,00``, en ``1470.00``)."""
    return amount.decimal_string().replace(".", str(get_decimal_symbol(locale)))


def format_country(code: str | None, locale: str) -> str:
    """A country as a form's drop-down names it in ``locale``, with its code (de ``Deutschland (DE)``); ``–`` if
    unknown, so an empty field is visible rather than silently skipped."""
    if not code:
        return "–"
    name = Locale.parse(locale).territories.get(code)
    return f"{name} ({code})" if name else code


def format_short_day(day: date, locale: str) -> str:
    """Day and month only (de ``1. Okt.``, en ``Oct 1``): chart labels, where the year is plain from the context."""
    return str(format_skeleton("MMMd", day, locale=locale)).translate(_SPACES)


def _css_colour(value: object) -> str:
    """Autoescape does not protect a CSS context; only a plain hex colour reaches a style attribute."""
    return value if isinstance(value, str) and _COLOUR.match(value) else DEFAULT_ACCENT


def _plain(value: object) -> str:
    """The words of a macro from a ``.txt`` template, as plain text again. Jinja marks a macro's output safe when
    an escaping (HTML) template calls it, though the ``.txt`` template escaped nothing: HTML passes such words
    through this filter so that autoescape escapes them once, like any other text."""
    return str(value)


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _tint(value: object, share: float = 0.88) -> str:
    """The accent mixed with white: a background that carries the brand without hurting legibility."""
    red, green, blue = (round(c + (255 - c) * share) for c in _rgb(_css_colour(value)))
    return f"#{red:02x}{green:02x}{blue:02x}"


def _text_on(value: object) -> str:
    """White or near-black, whichever reads better on the accent (a yellow brand gets dark button text)."""
    def linear(channel: int) -> float:
        c = channel / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    red, green, blue = (linear(c) for c in _rgb(_css_colour(value)))
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    # Contrast against white is 1.05 / (L + 0.05); against near-black it is about (L + 0.05) / 0.066.
    return _LIGHT_TEXT if 1.05 / (luminance + 0.05) >= (luminance + 0.05) / 0.066 else _DARK_TEXT


def text_table(rows: Sequence[Sequence[object]], align: str = "") -> str:
    """Rows as aligned plain-text columns for the text part; ``align`` gives l/r per column (default: first
    left, the rest right, as labels and figures read best)."""
    cells = [[str(cell) for cell in row] for row in rows]
    if not cells:
        return ""
    columns = max(len(row) for row in cells)
    widths = [max((len(row[i]) for row in cells if i < len(row)), default=0) for i in range(columns)]
    sides = (align or "l" + "r" * (columns - 1)).ljust(columns, "r")
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) if sides[i] == "l" else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def _translations(locale: str) -> gettext.NullTranslations:
    if locale == SOURCE_LOCALE:
        return gettext.NullTranslations()
    po = resources.files("templates").joinpath("locale", locale, "LC_MESSAGES", "messages.po")
    with po.open("rb") as source:
        catalog = read_po(source, locale=locale)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


def _strict(format_value: Callable[[Any], str]) -> Callable[[Any], str]:
    """A filter that names a missing variable, instead of Babel failing on it with a bare assertion."""
    def checked(value: Any) -> str:
        if isinstance(value, Undefined):
            value._fail_with_undefined_error()
        return format_value(value)

    return checked


def _environment(locale: str, loader: PackageLoader, translations: gettext.NullTranslations) -> Environment:
    env = Environment(
        loader=loader,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.install_gettext_translations(translations, newstyle=True)  # type: ignore[attr-defined]
    env.filters["money"] = _strict(lambda amount: format_money(amount, locale))
    env.filters["day"] = _strict(lambda day: format_day(day, locale))
    env.filters["css_colour"] = _css_colour
    env.filters["tint"] = _tint
    env.filters["text_on"] = _text_on
    env.filters["share"] = _strict(lambda share: format_share(share, locale))
    env.filters["short_day"] = _strict(lambda day: format_short_day(day, locale))
    env.filters["plain_amount"] = _strict(lambda amount: format_plain_amount(amount, locale))
    env.filters["country"] = lambda code: format_country(code, locale)
    env.filters["plain"] = _plain
    env.globals["locale"] = locale
    env.globals["text_table"] = text_table
    env.globals["chart_height"] = CHART_HEIGHT
    return env


class EmailRenderer:
    """Renders any email under ``templates/email/<name>/`` in any supported locale.

    Build one per process: it reads the catalogs and compiles templates once, then rendering is pure.
    """

    def __init__(self) -> None:
        loader = PackageLoader("templates", "email")
        self._translations = {locale: _translations(locale) for locale in LOCALES}
        self._environments = {locale: _environment(locale, loader, self._translations[locale]) for locale in LOCALES}
        # Rendering never reaches the network: a stray <link> must not make sending depend on a web server.
        self._inliner = CSSInliner(load_remote_stylesheets=False, keep_style_tags=False, keep_link_tags=False)

    def render(self, name: str, locale: str, context: Mapping[str, object]) -> RenderedEmail:
        """Render the subject, text and HTML parts of email ``name``; a missing variable is an error."""
        try:
            env = self._environments[locale]
        except KeyError:
            raise ValueError(f"locale must be one of {', '.join(LOCALES)}, got {locale!r}") from None
        values = {name: _from_outside(name, value) for name, value in context.items()}
        subject = env.get_template(f"{name}/subject.txt").render(values)
        html = env.get_template(f"{name}/body.html").render(values)
        return RenderedEmail(
            subject=_BLANKS.sub(" ", subject).strip(),
            text=env.get_template(f"{name}/body.txt").render(values),
            html=self._inliner.inline(html),
        )

    def payment_link(self, ctx: PaymentLinkContext) -> RenderedEmail:
        """The email that gives the buyer the replacement order's link after a failed installment."""
        return self.render("payment_link", ctx.locale, _buyer_values(ctx))

    def reminder(self, ctx: ReminderContext) -> RenderedEmail:
        """A friendly nudge that the same link still waits, sent at the vendor's reminder days."""
        return self.render("reminder", ctx.locale, _buyer_values(ctx))

    def final_notice(self, ctx: FinalNoticeContext) -> RenderedEmail:
        """The last chance to pay before the replacement order is cancelled on ``ctx.expires_on``."""
        return self.render("final_notice", ctx.locale, _buyer_values(ctx))

    def vendor_summary(self, ctx: VendorSummaryContext) -> RenderedEmail:
        """The vendor's morning email: how dunning went yesterday and over 30 days, and what needs them."""
        values = _values(ctx)
        values["bars"] = chart_bars(ctx.chart)
        values["chart_total"] = sum((entry.amount for entry in ctx.chart), Money.zero(ctx.currency))
        values["chart_peak"] = max(ctx.chart, key=lambda entry: entry.amount.minor)
        values["reply_to"] = None
        values["needs_person"] = tuple(self._person_line(case, ctx.locale) for case in ctx.needs_person)
        return self.render("vendor_summary", ctx.locale, values)

    def vendor_task(self, ctx: VendorTaskContext) -> RenderedEmail:
        """The vendor's task after a failed installment: make the replacement order in CopeCart by hand."""
        return self.render("vendor_task", ctx.locale, _task_values(ctx))

    def vendor_reminder(self, ctx: VendorReminderContext) -> RenderedEmail:
        """The daily reminder while the link is missing or the original order is not known cancelled."""
        return self.render("vendor_reminder", ctx.locale, _task_values(ctx))

    def vendor_deactivate_link(self, ctx: VendorDeactivateContext) -> RenderedEmail:
        """Asks the vendor to deactivate a link in CopeCart that must no longer be paid: dunlink cannot."""
        return self.render("vendor_deactivate_link", ctx.locale, _task_values(ctx))

    def _person_line(self, case: PersonCase, locale: str) -> _PersonLine:
        """A case for a person, its reason worded in ``locale``, its parameters formatted for it (the words
        cross the same boundary as every value on their way into the template)."""
        worded = word_reason(case.reason_code, case.params, case_id=case.case_id,
                             gettext=self._translations[locale].gettext,
                             format_value=lambda value: _format_param(value, locale))
        return _PersonLine(case.case_id, case.order_id, worded)

    def email(self, ctx: EmailContext) -> RenderedEmail:
        """Render whichever email ``ctx`` belongs to, for callers that handle every kind alike (previews)."""
        match ctx:
            case VendorReminderContext():
                return self.vendor_reminder(ctx)
            case VendorDeactivateContext():
                return self.vendor_deactivate_link(ctx)
            case VendorTaskContext():
                return self.vendor_task(ctx)
            case ReminderContext():
                return self.reminder(ctx)
            case FinalNoticeContext():
                return self.final_notice(ctx)
            case VendorSummaryContext():
                return self.vendor_summary(ctx)
            case _:
                return self.payment_link(ctx)


@dataclass(frozen=True, slots=True)
class _PersonLine:
    """A case for a person as the summary's templates show it."""

    case_id: str
    order_id: str
    reason: WordedReason


def one_line(text: str) -> str:
    """Text from outside as one line: line breaks and other controls folded to one space, bidi overrides dropped."""
    text = text.translate(_BIDI)
    folded = "".join(" " if unicodedata.category(c) in _FOLDED else c for c in text)
    return _BLANKS.sub(" ", folded).strip()


def lines_of(text: str) -> str:
    """Multi-line text from outside (an imprint): each line as :func:`one_line`, no blank line at either end nor
    two in a row, so a footer keeps its shape whatever the file held."""
    lines: list[str] = []
    for line in (one_line(raw) for raw in text.translate(_BIDI).splitlines()):
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip("\n")


def _from_outside(name: str, value: object) -> object:
    """The one boundary every context value crosses before a template sees it (see the module's docstring)."""
    if isinstance(value, str):
        return lines_of(value) if name in _MULTILINE else one_line(value)
    if isinstance(value, tuple):
        return tuple(_from_outside(name, item) for item in value)
    if isinstance(value, Mapping):
        return {key: _from_outside(str(key), item) for key, item in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _from_outside(f.name, getattr(value, f.name)) for f in fields(value)}
        if any(changes[key] != getattr(value, key) for key in changes):
            return replace(value, **changes)
    return value


def _format_param(value: object, locale: str) -> str:
    """A reason's parameter as the reader of ``locale`` writes it: amounts with their currency, dates spelled out."""
    if isinstance(value, Money):
        return format_money(value, locale)
    if isinstance(value, date):
        return format_day(value, locale)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(format_decimal(value, locale=locale))
    return str(value)


def _values(ctx: EmailContext) -> dict[str, object]:
    values: dict[str, object] = {field.name: getattr(ctx, field.name) for field in fields(ctx)}
    imprint = lines_of(ctx.imprint) if ctx.imprint else ""
    values["imprint_lines"] = tuple(imprint.split("\n")) if imprint else ()
    return values


def _buyer_values(ctx: PaymentLinkContext) -> dict[str, object]:
    values = _values(ctx)
    values["buyer_name"] = f"{ctx.buyer_first_name} {ctx.buyer_last_name}".strip()
    return values


def _task_values(ctx: VendorTaskContext) -> dict[str, object]:
    values = _values(ctx)
    values["buyer_name"] = f"{ctx.buyer_first_name} {ctx.buyer_last_name}".strip()
    values["reply_to"] = None
    return values


# Every context an email is rendered from.
EmailContext = PaymentLinkContext | VendorSummaryContext | VendorTaskContext

# Every email under templates/email/, in the order a case meets them.
EMAILS = ("payment_link", "reminder", "final_notice", "vendor_summary", "vendor_task", "vendor_reminder",
          "vendor_deactivate_link")
