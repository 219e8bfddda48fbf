"""Money as an integer of minor units with an ISO 4217 currency.

No float ever touches an amount: CopeCart's decimal strings are parsed digit by digit, and arithmetic
across currencies is refused instead of silently mixing euros and yen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Minor-unit exponents (ISO 4217) of the currencies checkout platforms settle in.
EXPONENTS: dict[str, int] = {
    "EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2, "SEK": 2, "NOK": 2, "DKK": 2,
    "PLN": 2, "CZK": 2, "HUF": 2, "RON": 2, "BGN": 2, "TRY": 2, "BRL": 2, "MXN": 2, "ZAR": 2, "SGD": 2,
    "HKD": 2, "INR": 2, "CNY": 2, "ILS": 2, "AED": 2,
    "JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0,
    "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3,
}

# Amounts are stored as signed 64-bit integers of minor units (BIGINT). An amount that does not fit is refused
# where it enters, as bad input, instead of failing in the database on every try.
MAX_MINOR = 2**63 - 1

# ASCII digits only: ``\d`` would also take "٤٩" or "４９", which ``int`` quietly reads as 49.
_DECIMAL = re.compile(r"^(?P<sign>-?)(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]+))?\Z")


class MoneyError(ValueError):
    """An amount or currency that cannot be represented exactly."""


class CurrencyMismatch(MoneyError):
    """Two amounts of different currencies were combined."""


def exponent(currency: str) -> int:
    """The number of decimals of ``currency``; unknown codes are refused."""
    try:
        return EXPONENTS[currency]
    except KeyError:
        raise MoneyError(f"unsupported currency {currency!r}") from None


@dataclass(frozen=True, slots=True, order=False)
class Money:
    minor: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise MoneyError(f"minor units must be an int, got {type(self.minor).__name__}")
        exponent(self.currency)
        if not -MAX_MINOR <= self.minor <= MAX_MINOR:
            raise MoneyError(f"too large to store: more than {MAX_MINOR} minor units of {self.currency}")

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def parse(cls, text: object, currency: str) -> Money:
        """Parse a decimal string such as ``"49.00"``, ``"49"``, ``"49.9"`` or ``"-50.00"`` exactly."""
        if not isinstance(text, str):
            raise MoneyError(f"an amount must be a decimal string, got {type(text).__name__} {text!r}")
        match = _DECIMAL.match(text.strip())
        if match is None:
            raise MoneyError(f"not a decimal amount: {text!r}")
        places = exponent(currency)
        fraction = match["fraction"] or ""
        if len(fraction) > places:
            raise MoneyError(f"{text!r} has more decimals than {currency} allows ({places})")
        minor = int(match["whole"]) * 10**places + int(fraction.ljust(places, "0") or "0")
        return cls(-minor if match["sign"] else minor, currency)

    def _same(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.minor <= other.minor

    @property
    def is_positive(self) -> bool:
        return self.minor > 0

    @property
    def is_zero(self) -> bool:
        return self.minor == 0

    def decimal_string(self) -> str:
        """The amount as a plain decimal string (``"200.00"``), for formatting and APIs."""
        places = exponent(self.currency)
        sign = "-" if self.minor < 0 else ""
        whole, fraction = divmod(abs(self.minor), 10**places)
        return f"{sign}{whole}.{fraction:0{places}d}" if places else f"{sign}{whole}"

    def __str__(self) -> str:
        return f"{self.decimal_string()} {self.currency}"


def total(amounts: list[Money] | tuple[Money, ...], currency: str) -> Money:
    """Sum amounts of one currency; an empty sum is zero in ``currency``."""
    result = Money.zero(currency)
    for amount in amounts:
        result = result + amount
    return result
