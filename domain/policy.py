"""What a vendor decided about dunning: the shape of the replacement and the clock of the case."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class ReplacementKind(StrEnum):
    """How the amount still owed is asked for again."""

    REMAINING_INSTALLMENTS = "remaining_installments"
    SINGLE_PAYMENT = "single_payment"


class ReplacementBy(StrEnum):
    """Who makes the replacement: dunlink through the platform's order API, or the vendor by hand in CopeCart
    (which gives vendors no API to create or cancel orders), guided by dunlink's task email and vendor page."""

    API = "api"
    VENDOR = "vendor"


@dataclass(frozen=True, slots=True)
class DunningPolicy:
    """A vendor's dunning choices, as read from the vendors file."""

    replacement: ReplacementKind = ReplacementKind.REMAINING_INSTALLMENTS
    reminder_days: tuple[int, ...] = field(default=(3, 7))
    expire_after_days: int = 14
    grace_hours: int = 0
    replacement_by: ReplacementBy = ReplacementBy.API

    def __post_init__(self) -> None:
        if any(day <= 0 for day in self.reminder_days):
            raise ValueError("reminder_days must be positive")
        if list(self.reminder_days) != sorted(set(self.reminder_days)):
            raise ValueError("reminder_days must be strictly increasing")
        if self.expire_after_days <= 0:
            raise ValueError("expire_after_days must be positive")
        if self.reminder_days and self.reminder_days[-1] >= self.expire_after_days:
            raise ValueError("every reminder day must come before expire_after_days")
        if self.grace_hours < 0:
            raise ValueError("grace_hours must not be negative")
