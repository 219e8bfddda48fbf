"""What the use cases need from the world, as Protocols: they are written against these and never import
Celery, FastAPI or SQLAlchemy (``.importlinter`` checks it). ``dunlink.runtime.bootstrap`` builds the real
``Services`` at start-up; tests build one with other parts where they must.

    Services        settings, vendors, the clock, and the ports below
    ├── uow()       a unit of work on the database: the repositories of cases, the inbox, emails, summaries
    ├── platform    the platform's order API (adapters.platform.port.PlatformPort)
    ├── mail        hands a composed message to a mail server (adapters.email.port.MailSender)
    ├── renderer    renders emails from typed contexts (adapters.email.render.EmailRenderer)
    └── enqueue     publishes a wake-up: the name of a piece of work, its arguments, and its queue (Work)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from enum import StrEnum
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from adapters.email.port import MailSender
from adapters.email.render import EmailRenderer
from adapters.platform.port import Order, PlatformPort
from adapters.web.tokens import VendorTokens
from domain.case import DunningCase, RetryPolicy
from domain.plans import Frequency
from dunlink.config.settings import Settings
from dunlink.config.vendors import Vendor
from platforms.digistore24.links import BuyUrl, NewBuyUrl, RebillingStop

if TYPE_CHECKING:  # the repositories' classes, for their methods' types only
    from adapters.db.repositories import CaseRepository, EmailRepository, InboxRepository
    from adapters.db.summaries import SummaryRepository

# The queues work is routed to: platform calls and event handling, and emails (a slow mail server never holds
# up a platform step). workers/registry.py declares them to Celery with each task's options.
PLATFORM_QUEUE = "dunlink.platform"
EMAIL_QUEUE = "dunlink.email"


class Work(StrEnum):
    """A piece of work the use cases hand to a worker; its value is the Celery task's name."""

    PROCESS_EVENT = "dunlink.process_event"
    ADVANCE_CASE = "dunlink.advance_case"
    SEND_EMAIL = "dunlink.send_email"
    SEND_SUMMARY = "dunlink.send_summary"
    RELAY = "dunlink.relay"

    @property
    def queue(self) -> str:
        return EMAIL_QUEUE if self in (Work.SEND_EMAIL, Work.SEND_SUMMARY) else PLATFORM_QUEUE


Enqueue = Callable[[str, list[Any], str], None]
# What a performed step hands back: a function that records the step's outcome on the case as it is then.
Outcome = Callable[[DunningCase, datetime], None]


class UnitOfWork(Protocol):
    """One transaction on the database, with its repositories."""

    cases: CaseRepository
    inbox: InboxRepository
    emails: EmailRepository
    summaries: SummaryRepository

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None: ...

    def commit(self) -> None: ...


class Services(Protocol):
    """Everything a use case needs: settings, vendors, the clock, and the ports."""

    settings: Settings
    vendors: Mapping[str, Vendor]
    platform: PlatformPort
    mail: MailSender
    renderer: EmailRenderer
    retry_policy: RetryPolicy
    relay_settle: timedelta
    summaries_sent: dict[str, date]
    tokens: VendorTokens | None

    @property
    def clock(self) -> Callable[[], datetime]: ...

    @property
    def enqueue(self) -> Enqueue: ...

    @property
    def lease(self) -> timedelta: ...

    def uow(self) -> UnitOfWork: ...

    def payment_links(self, vendor: Vendor) -> PaymentLinkPlatform:
        """The API of a vendor whose platform makes payment links (``platform = "digistore24"``)."""
        ...

    def at(self, now: datetime) -> Services:
        """These services with the clock stopped at ``now`` and nothing published (``dunlink due``)."""
        ...


def publish(services: Services, work: Work, args: list[Any]) -> None:
    """Publish ``work`` on its queue."""
    services.enqueue(work.value, args, work.queue)


class PaymentLinkPlatform(Protocol):
    """A platform that makes a payment link rather than a replacement order, and stops a purchase's rebilling
    rather than cancelling an order (Digistore24: ``platforms/digistore24/client.py``)."""

    def get_order(self, purchase_id: str, *, frequency: Frequency | None) -> Order: ...

    def create_buy_url(self, link: NewBuyUrl, *, now: datetime) -> BuyUrl: ...

    def stop_rebilling(self, purchase_id: str) -> RebillingStop: ...
