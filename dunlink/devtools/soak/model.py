"""The soak's scenario: vendors, orders and the options of a run."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.money import Money

if TYPE_CHECKING:  # imported where used: every 'dunlink' command builds this parser, few run the soak
    from adapters.email.capture import ReceivedMail


DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
VENDOR_SLUGS = ("acme", "globex", "initech", "umbrella", "hooli", "wonka", "stark", "wayne")
DS24_VENDOR_SLUGS = ("cyberdyne", "tyrell", "soylent", "oscorp")
COPECART, DIGISTORE24 = "copecart", "digistore24"
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
    "Digistore24: every missed payment answered OK is reflected",
    "Digistore24: one buy URL per dunned purchase, for exactly what is owed (createBuyUrl)",
    "Digistore24: each rebilling stopped by at most one effective call, after its buy URL existed",
    "Digistore24: no buyer holding a buy URL while the original still charges",
    "Digistore24: one payment-link email per case, carrying its buy URL (by Message-ID)",
    "Digistore24: a payment through the buy URL counted once",
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
    replacement_paid: str | None = None  # the replacement order (CopeCart) or buy URL (Digistore24) paid
    platform: str = COPECART
    single_payment: bool = False  # the vendor asks for all that is owed at once, not the remaining installments
    race_refused: bool = False  # Digistore24 refused the racing payment: the rebilling was already stopped

    @property
    def failed(self) -> int:
        return self.paid + 1

    @property
    def on_digistore24(self) -> bool:
        return self.platform == DIGISTORE24

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

    def to_purchase(self, now: datetime) -> dict[str, Any]:
        """The Digistore24 purchase (the sandbox's seed shape), bought so long ago that the missed payment is due."""
        amount = Money(self.amounts[0], "EUR").decimal_string()
        return {
            "id": self.order_id, "vendor": self.vendor,
            "product": {"id": f"p-{self.vendor}-{len(self.amounts)}", "name": "Soak Course"},
            "buyer": {"id": f"b-{self.order_id.lower()}", "email": self.email, "first_name": self.first_name,
                      "last_name": "Probe", "country": "DE"},
            "currency": "EUR", "first_amount": amount, "other_amounts": amount,
            "number_of_installments": len(self.amounts), "billing_interval": "1_month", "payments": self.paid,
            "created_at": (now - timedelta(days=31 * self.paid + 2)).strftime("%Y-%m-%d %H:%M:%S"),
        }


@dataclass(frozen=True)
class SoakOptions:
    cases: int = 2000
    vendors: int = 3
    ds24_vendors: int = 2
    ds24_share: float = 0.25
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
    ds24_lost_answers: float = 0.0
    folder: Path = Path("var/soak")

    @property
    def time_allowed(self) -> float:
        return self.deadline if self.deadline is not None else 600.0 + 0.1 * self.cases


# -- the scenario ----------------------------------------------------------------------------------------------


def vendors_toml(count: int, ds24_count: int = 0) -> str:
    """Vendors alternating language and replacement kind, so both email locales and both plans are exercised,
    on CopeCart and then on Digistore24."""
    blocks = []
    for index, slug in enumerate(vendor_slugs(count)):
        blocks.append(_vendor_block(index, slug, f'copecart_ipn_secret = "soak-secret-{slug}"'))
    for index, slug in enumerate(ds24_slugs(ds24_count)):
        secrets = (f'platform = "digistore24"\ndigistore24_ipn_passphrase = "soak-passphrase-{slug}"\n'
                   f'digistore24_api_key = "soak-api-key-{slug}"')
        blocks.append(_vendor_block(index, slug, secrets))
    return "\n".join(blocks)


def _vendor_block(index: int, slug: str, platform: str) -> str:
    return f"""[vendors.{slug}]
name = "{slug.capitalize()} Academy"
summary_email = "owner@{slug}.example"
locale = "{'de' if index % 2 == 0 else 'en'}"
timezone = "Europe/Berlin"
{platform}
replacement = "{'remaining_installments' if index % 2 == 0 else 'single_payment'}"
reminder_days = [3, 7]
expire_after_days = 14
"""


def vendor_slugs(count: int) -> list[str]:
    return [VENDOR_SLUGS[i] if i < len(VENDOR_SLUGS) else f"vendor{i + 1}" for i in range(count)]


def ds24_slugs(count: int) -> list[str]:
    return [DS24_VENDOR_SLUGS[i] if i < len(DS24_VENDOR_SLUGS) else f"ds24vendor{i + 1}" for i in range(count)]


def make_orders(options: SoakOptions, rng: random.Random, tag: str) -> list[SoakOrder]:
    """N installment orders; half the races fail the last installment, so paying it completes the original."""
    slugs, ds24 = vendor_slugs(options.vendors), ds24_slugs(options.ds24_vendors)
    share = options.ds24_share if ds24 else 0.0
    names = ("Anna", "Jürgen", "Zoë", "Chloé", "Oskar", "Maëlle", "Lena", "Ömer")
    orders = []
    for number in range(1, options.cases + 1):
        # An even spread: order n is on Digistore24 when the share's running count steps up at n.
        on_ds24 = int(number * share) != int((number - 1) * share)
        count = rng.randint(3, 12)
        amounts = tuple([rng.choice((1990, 4900, 9900, 14900))] * count)
        roll = rng.random()
        plan = Plan.RACE if roll < RACE_SHARE else (
            Plan.PAYS_REPLACEMENT if roll < RACE_SHARE + PAY_REPLACEMENT_SHARE else Plan.PLAIN)
        paid = count - 1 if plan is Plan.RACE and rng.random() < 0.5 else rng.randint(1, count - 1)
        order_id = f"SK{tag}-{number:05d}"
        vendors = ds24 if on_ds24 else slugs
        index = number % len(vendors)  # every second vendor asks for a single payment (vendors_toml)
        orders.append(SoakOrder(order_id, vendors[index], amounts, paid, plan,
                                f"{order_id.lower()}@buyers.soak.example", rng.choice(names),
                                platform=DIGISTORE24 if on_ds24 else COPECART, single_payment=index % 2 == 1))
    return orders


@dataclass
class ApiCall:
    """One Digistore24 API call as the soak's pass-through in front of the sandbox saw it. The sandbox's own
    request log names no purchase and no case, so which purchase a stop was for, and whether it came after
    that case's link existed, is read here; ``arrived`` and ``answered`` are the pass-through's clock."""

    seq: int
    function: str
    purchase_id: str
    custom: str
    arrived: float
    answered: float | None = None
    result: str = ""  # "success" or "error" (Digistore24's envelope), else the HTTP status of a fault
    modified: bool = False  # stopRebilling changed something
    link_id: str = ""  # the buy URL createBuyUrl made
    lost: bool = False  # dunlink never read the answer: dropped by the pass-through, or dunlink gave up on it


@dataclass
class Records:
    tag: str
    orders: dict[str, dict[str, Any]]
    requests: list[dict[str, Any]]
    ipns: list[dict[str, Any]]
    accepted: set[str]
    mails: list[ReceivedMail]
    case_rows: list[tuple[str, str, str | None, str]]
    purchases: dict[str, dict[str, Any]] = field(default_factory=dict)  # GET /sandbox/digistore24/purchases
    links: list[dict[str, Any]] = field(default_factory=list)  # GET /sandbox/digistore24/buy-urls
    calls: list[ApiCall] = field(default_factory=list)  # Digistore24 API calls, as the pass-through saw them
    recovered: dict[str, int] = field(default_factory=dict)  # case id -> recovered minor units (dunlink's)


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
        if found := order_of_address(address, tag):
            return found
    return ""


def order_of_address(address: str, tag: str) -> str:
    """The original order (or purchase) of a soak buyer's address, or ''."""
    local = address.partition("@")[0].lower()
    return "SK" + local[2:] if local.startswith(f"sk{tag}-") else ""


def ipn_key(entry: dict[str, Any]) -> str:
    """What tells one delivered IPN from another: its transaction id, or, for a Digistore24 event without one
    (a missed payment, a stopped rebilling), its event, purchase and signature over the whole body."""
    return str(entry.get("transaction_id") or
               f"{entry['event_type']}@{entry['order_id']}#{str(entry.get('signature') or '')[:16]}")
