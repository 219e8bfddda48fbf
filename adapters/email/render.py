"""Rendering emails from the Jinja2 templates shipped in the ``templates`` package.

English is the source language inside ``{% trans %}`` blocks; other languages come from a ``.po``
catalog read with Babel and compiled in memory, so a plain ``pip install`` is enough: no ``.mo`` build
step to forget. Money and dates are formatted by Babel for the vendor's locale, the way the buyer
writes them (de ``200,00 €``, en ``€200.00``).
"""

from __future__ import annotations

import gettext
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date
from decimal import Decimal
from importlib import resources

from babel.dates import format_date
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_currency
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from domain.money import Money

LOCALES = ("de", "en")
SOURCE_LOCALE = "en"
DEFAULT_ACCENT = "#1f6feb"

_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
# Babel separates amount and symbol with no-break or narrow no-break spaces; the contract and the
# buyer's search box both expect a plain space.
_SPACES = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " "})
_BLANKS = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class ScheduleLine:
    """One installment of the replacement order, as the buyer will be charged."""

    number: int
    amount: Money
    due_date: date


@dataclass(frozen=True, slots=True)
class PaymentLinkContext:
    """Everything the payment-link email shows; names and product come from webhooks and are untrusted."""

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
    accent_colour: str = DEFAULT_ACCENT
    logo_url: str | None = None

    def __post_init__(self) -> None:
        if self.locale not in LOCALES:
            raise ValueError(f"locale must be one of {', '.join(LOCALES)}, got {self.locale!r}")
        # The URL lands in an href: only web links, never javascript: or data:.
        if not self.payment_url.startswith(("https://", "http://")):
            raise ValueError("payment_url must be an http:// or https:// URL")
        if not _COLOUR.match(self.accent_colour):
            raise ValueError("accent_colour must be a colour such as #1f6feb")
        if self.logo_url is not None and not self.logo_url.startswith("https://"):
            raise ValueError("logo_url must be an https:// URL")


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def format_money(amount: Money, locale: str) -> str:
    """An amount as a buyer of ``locale`` writes it, with a plain space, never losing a minor unit."""
    formatted = format_currency(Decimal(amount.decimal_string()), amount.currency, locale=locale,
                                decimal_quantization=False)
    return str(formatted).translate(_SPACES)


def format_day(day: date, locale: str) -> str:
    """A date spelled out (de ``1. Oktober 2026``, en ``October 1, 2026``) so no one reads 10/1 as 1 Oct."""
    return str(format_date(day, "long", locale=locale)).translate(_SPACES)


def _css_colour(value: object) -> str:
    """Autoescape does not protect a CSS context; only a plain hex colour reaches a style attribute."""
    return value if isinstance(value, str) and _COLOUR.match(value) else DEFAULT_ACCENT


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


def _environment(locale: str, loader: PackageLoader) -> Environment:
    env = Environment(
        loader=loader,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.install_gettext_translations(_translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.filters["money"] = lambda amount: format_money(amount, locale)
    env.filters["day"] = lambda day: format_day(day, locale)
    env.filters["css_colour"] = _css_colour
    env.globals["locale"] = locale
    return env


class EmailRenderer:
    """Renders any email under ``templates/email/<name>/`` in any supported locale.

    Build one per process: it reads the catalogs and compiles templates once, then rendering is pure.
    """

    def __init__(self) -> None:
        loader = PackageLoader("templates", "email")
        self._environments = {locale: _environment(locale, loader) for locale in LOCALES}

    def render(self, name: str, locale: str, context: Mapping[str, object]) -> RenderedEmail:
        """Render the subject, text and HTML parts of email ``name``; a missing variable is an error."""
        try:
            env = self._environments[locale]
        except KeyError:
            raise ValueError(f"locale must be one of {', '.join(LOCALES)}, got {locale!r}") from None
        values = dict(context)
        subject = env.get_template(f"{name}/subject.txt").render(values)
        return RenderedEmail(
            subject=_BLANKS.sub(" ", subject).strip(),
            text=env.get_template(f"{name}/body.txt").render(values),
            html=env.get_template(f"{name}/body.html").render(values),
        )

    def payment_link(self, ctx: PaymentLinkContext) -> RenderedEmail:
        """The email that gives the buyer the replacement order's link after a failed installment."""
        values: dict[str, object] = {field.name: getattr(ctx, field.name) for field in fields(ctx)}
        values["buyer_name"] = f"{ctx.buyer_first_name} {ctx.buyer_last_name}".strip()
        return self.render("payment_link", ctx.locale, values)
