"""Money: CopeCart's decimal strings parsed exactly, never a float, never two currencies mixed."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.money import EXPONENTS, MAX_MINOR, CurrencyMismatch, Money, MoneyError, exponent, total


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("49.00", "EUR", 4900),
        ("49", "EUR", 4900),
        ("49.9", "EUR", 4990),
        ("0.01", "EUR", 1),
        ("-50.00", "EUR", -5000),
        ("-0.05", "EUR", -5),
        ("0", "EUR", 0),
        ("1200", "JPY", 1200),
        ("1.234", "KWD", 1234),
        ("1.2", "KWD", 1200),
        (" 49.00 ", "EUR", 4900),
        ("92233720368547758.07", "USD", 2**63 - 1),
        ("-9223372036854775807", "JPY", -(2**63 - 1)),
    ],
)
def test_parse_reads_decimal_strings_exactly(text: str, currency: str, minor: int) -> None:
    assert Money.parse(text, currency) == Money(minor, currency)


@pytest.mark.parametrize(
    "value",
    [49.0, 49.9, math.nan, math.inf, 4900, Decimal("49.00"), None, True, b"49.00"],
)
def test_parse_refuses_anything_but_a_string(value: object) -> None:
    with pytest.raises(MoneyError, match="decimal string"):
        Money.parse(value, "EUR")


@pytest.mark.parametrize(
    "text",
    ["NaN", "nan", "inf", "-inf", "1e3", "1E3", "49,00", "+49.00", ".5", "5.", "", " ", "--5", "1_000",
     "1.2.3", "4 9", "0x10", "\u0664\u0669.00", "\uff14\uff19"],
)
def test_parse_refuses_what_is_not_a_plain_decimal(text: str) -> None:
    with pytest.raises(MoneyError, match="not a decimal amount"):
        Money.parse(text, "EUR")


@pytest.mark.parametrize(
    ("text", "currency"),
    [("1.234", "EUR"), ("49.000", "EUR"), ("1.5", "JPY"), ("1200.0", "JPY"), ("0.0001", "KWD")],
)
def test_parse_refuses_more_decimals_than_the_currency_has(text: str, currency: str) -> None:
    with pytest.raises(MoneyError, match=f"more decimals than {currency}"):
        Money.parse(text, currency)


@pytest.mark.parametrize("currency", ["XXX", "eur", "", "EURO"])
def test_unknown_currency_is_refused(currency: str) -> None:
    with pytest.raises(MoneyError, match="unsupported currency"):
        Money.parse("1.00", currency)
    with pytest.raises(MoneyError, match="unsupported currency"):
        Money(100, currency)
    with pytest.raises(MoneyError, match="unsupported currency"):
        exponent(currency)


@pytest.mark.parametrize("minor", [1.0, 49.5, Decimal(1), "100", True])
def test_minor_units_must_be_an_int(minor: object) -> None:
    with pytest.raises(MoneyError, match="must be an int"):
        Money(minor, "EUR")  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "currency"), [
    ("92233720368547758.08", "EUR"), ("-92233720368547758.08", "EUR"), ("9223372036854775808", "JPY"),
    ("123456789012345678901234567890.99", "USD")])
def test_an_amount_beyond_a_64_bit_integer_of_minor_units_is_refused(text: str, currency: str) -> None:
    """The database stores minor units as BIGINT: what cannot be stored is bad input, never a stored poison."""
    with pytest.raises(MoneyError, match="too large to store"):
        Money.parse(text, currency)


def test_a_sum_beyond_a_64_bit_integer_is_refused() -> None:
    with pytest.raises(MoneyError, match="too large to store"):
        total([Money(MAX_MINOR, "EUR"), Money(1, "EUR")], "EUR")


def test_arithmetic_within_one_currency() -> None:
    a, b = Money(5000, "EUR"), Money(1234, "EUR")
    assert a + b == Money(6234, "EUR")
    assert a - b == Money(3766, "EUR")
    assert b - a == Money(-3766, "EUR")
    assert -a == Money(-5000, "EUR")
    assert b < a
    assert b <= a
    assert a <= Money(5000, "EUR")
    assert a > b
    assert not a < a
    assert Money(1, "EUR").is_positive
    assert not Money(0, "EUR").is_positive
    assert not Money(-1, "EUR").is_positive
    assert Money.zero("JPY").is_zero
    assert Money.zero("JPY") == Money(0, "JPY")


def test_amounts_of_different_currencies_never_mix() -> None:
    eur, usd = Money(100, "EUR"), Money(100, "USD")
    with pytest.raises(CurrencyMismatch, match="EUR with USD"):
        eur + usd
    with pytest.raises(CurrencyMismatch):
        eur - usd
    with pytest.raises(CurrencyMismatch):
        eur < usd  # noqa: B015
    with pytest.raises(CurrencyMismatch):
        eur <= usd  # noqa: B015
    with pytest.raises(CurrencyMismatch):
        total([eur, usd], "EUR")
    with pytest.raises(CurrencyMismatch):
        total([usd], "EUR")
    assert eur != usd


def test_money_does_not_combine_with_plain_numbers() -> None:
    with pytest.raises(TypeError):
        Money(100, "EUR") + 1  # type: ignore[operator]


def test_total() -> None:
    assert total([], "JPY") == Money(0, "JPY")
    assert total((Money(1, "EUR"), Money(2, "EUR"), Money(-1, "EUR")), "EUR") == Money(2, "EUR")


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(20000, "EUR"), "200.00"),
        (Money(5, "EUR"), "0.05"),
        (Money(-5, "EUR"), "-0.05"),
        (Money(-5000, "EUR"), "-50.00"),
        (Money(0, "EUR"), "0.00"),
        (Money(1200, "JPY"), "1200"),
        (Money(-7, "JPY"), "-7"),
        (Money(1, "KWD"), "0.001"),
        (Money(12345, "KWD"), "12.345"),
    ],
)
def test_decimal_string(money: Money, text: str) -> None:
    assert money.decimal_string() == text
    assert str(money) == f"{text} {money.currency}"
    assert Money.parse(text, money.currency) == money


@settings(max_examples=500, deadline=None)
@given(minor=st.integers(min_value=-MAX_MINOR, max_value=MAX_MINOR), currency=st.sampled_from(sorted(EXPONENTS)))
def test_decimal_string_round_trips_for_every_amount_and_currency(minor: int, currency: str) -> None:
    money = Money(minor, currency)
    assert Money.parse(money.decimal_string(), currency) == money


@settings(max_examples=300, deadline=None)
@given(
    whole=st.integers(min_value=0, max_value=10**12),
    fraction=st.text(alphabet="0123456789", max_size=3),
    negative=st.booleans(),
    currency=st.sampled_from(sorted(EXPONENTS)),
)
def test_parse_agrees_with_exact_decimal_arithmetic(whole: int, fraction: str, negative: bool, currency: str) -> None:
    text = ("-" if negative else "") + str(whole) + (f".{fraction}" if fraction else "")
    places = exponent(currency)
    if len(fraction) > places:
        with pytest.raises(MoneyError):
            Money.parse(text, currency)
    else:
        assert Money.parse(text, currency).minor == int(Decimal(text).scaleb(places))
