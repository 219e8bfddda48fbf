"""The soak's scenario: vendors, orders and the options of a run."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: every 'dunlink' command builds this parser, few run the soak
    from adapters.email.capture import ReceivedMail


DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
VENDOR_SLUGS = ("acme", "globex", "initech", "umbrella", "hooli", "wonka", "stark", "wayne")
WAITING = frozenset({"awaiting_payment", "needs_person"})
ENDS = frozenset({"recovered", "resolved", "lost"})
PAID_AFTER_CANCEL = "paid on a cancelled order"
FAULTS = {"error_rate": 0.20, "error_status": 503, "timeout_rate": 0.05, "rate_limit_rate": 0.05,
          "retry_after_s": 1}
DUPLICATE_SHARE = 0.20
RACE_SHARE = 0.15
PAY_REPLACEMENT_SHARE = 0.20
REDELIVERY_LIMIT = 10  # CopeCart retries an IPN 10 times before giving up
CHECK_NAMES = (
    "every IPN answered OK is reflected",
    "at most one replacement per original (GET /sandbox/orders?replaces=)",
    "each original cancelled by at most one effective call",
    "no original and replacement both active for one case",
    "one payment-link email per case (by Message-ID)",
    "no case stuck outside an end or waiting state",
)
_LINK_ID = re.compile(r"<dunlink\.([^.>]+)\.send_link@[^>]+>")


class Plan(StrEnum):
    """What the soak does to an order besides failing one of its installments."""

    PLAIN = "plain"
    RACE = "race"  # the failed installment is paid on the original shortly after the failure
    PAYS_REPLACEMENT = "pays_replacement"  # the buyer pays the replacement once the link email arrived


@dataclass
class SoakOrder:
    order_id: str
    vendor: str
    amounts: tuple[int, ...]
    paid: int
    plan: Plan
    email: str
    first_name: str
    pending: int = 0  # actions of the soak's own still to happen for this order
    fed: bool = False
    replacement_paid: str | None = None

    @property
    def failed(self) -> int:
        return self.paid + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.order_id, "vendor": self.vendor, "status": "active",
            "product": {"id": f"p-{self.vendor}-{len(self.amounts)}", "name": "Soak Course"},
            "buyer": {"id": f"b-{self.order_id.lower()}", "email": self.email, "first_name": self.first_name,
                      "last_name": "Probe", "country_code": "DE"},
            "currency": "EUR",
            "plan": {"kind": "installments", "frequency": "monthly", "installments": [
                {"number": n, "amount": amount, "due_date": f"{2026 + (n + 5) // 12}-{(n + 5) % 12 + 1:02d}-01",
                 "status": "paid" if n <= self.paid else "open"} for n, amount in enumerate(self.amounts, 1)]},
            "replaces": None,
        }


@dataclass(frozen=True)
class SoakOptions:
    cases: int = 2000
    vendors: int = 3
    workers: int = 2
    concurrency: int = 4
    kills: int = 2
    database_url: str | None = None
    postgres: str = DEFAULT_POSTGRES
    seed: int = 1
    report: Path | None = None
    deadline: float | None = None  # 600 s plus 0.1 s per case
    window: int = 80
    lost_answers: float = 0.0
    folder: Path = Path("var/soak")

    @property
    def time_allowed(self) -> float:
        return self.deadline if self.deadline is not None else 600.0 + 0.1 * self.cases


# -- the scenario ----------------------------------------------------------------------------------------------


def vendors_toml(count: int) -> str:
    """Vendors alternating language and replacement kind, so both email locales and both plans are exercised."""
    blocks = []
    for index, slug in enumerate(vendor_slugs(count)):
        blocks.append(f"""[vendors.{slug}]
name = "{slug.capitalize()} Academy"
summary_email = "owner@{slug}.example"
locale = "{'de' if index % 2 == 0 else 'en'}"
timezone = "Europe/Berlin"
copecart_ipn_secret = "soak-secret-{slug}"
replacement = "{'remaining_installments' if index % 2 == 0 else 'single_payment'}"
reminder_days = [3, 7]
expire_after_days = 14
""")
    return "\n".join(blocks)


def vendor_slugs(count: int) -> list[str]:
    return [VENDOR_SLUGS[i] if i < len(VENDOR_SLUGS) else f"vendor{i + 1}" for i in range(count)]


def make_orders(options: SoakOptions, rng: random.Random, tag: str) -> list[SoakOrder]:
    """N installment orders; half the races fail the last installment, so paying it completes the original."""
    slugs = vendor_slugs(options.vendors)
    names = ("Anna", "Jürgen", "Zoë", "Chloé", "Oskar", "Maëlle", "Lena", "Ömer")
    orders = []
    for number in range(1, options.cases + 1):
        count = rng.randint(3, 12)
        amounts = tuple([rng.choice((1990, 4900, 9900, 14900))] * count)
        roll = rng.random()
        plan = Plan.RACE if roll < RACE_SHARE else (
            Plan.PAYS_REPLACEMENT if roll < RACE_SHARE + PAY_REPLACEMENT_SHARE else Plan.PLAIN)
        paid = count - 1 if plan is Plan.RACE and rng.random() < 0.5 else rng.randint(1, count - 1)
        order_id = f"SK{tag}-{number:05d}"
        orders.append(SoakOrder(order_id, slugs[number % len(slugs)], amounts, paid, plan,
                                f"{order_id.lower()}@buyers.soak.example", rng.choice(names)))
    return orders


@dataclass
class Records:
    tag: str
    orders: dict[str, dict[str, Any]]
    requests: list[dict[str, Any]]
    ipns: list[dict[str, Any]]
    accepted: set[str]
    mails: list[ReceivedMail]
    case_rows: list[tuple[str, str, str | None, str]]


@dataclass
class Check:
    name: str
    summary: str
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def order_of(mail: ReceivedMail, tag: str) -> str:
    """The original order a buyer email belongs to: each soak buyer has an address of their own."""
    for address in mail.rcpt_tos:
        local = address.partition("@")[0]
        if local.startswith(f"sk{tag}-"):
            return "SK" + local[2:]
    return ""
