"""Wiring, in one place: what each process builds at start-up from settings and the vendors file."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.uow import SqlUnitOfWork
from adapters.email.port import MailSender
from adapters.email.render import EmailRenderer
from adapters.email.smtp import SmtpSender
from adapters.platform.http import HttpPlatform
from adapters.platform.port import PlatformPort
from adapters.web.tokens import VendorTokens
from domain.case import RetryPolicy
from dunlink.config.settings import Settings, load_checked_vendors, settings
from dunlink.config.vendors import Vendor
from dunlink.usecases.ports import Enqueue
from platforms.digistore24.client import DigistoreClient

# Many wake-ups of one task for one queue at once (the webhook's batches); raises if they were not published.
EnqueueMany = Callable[[str, Sequence[list[Any]], str], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    """Everything a task or request needs; tests build one with other parts where they must."""

    settings: Settings
    vendors: Mapping[str, Vendor]
    engine: Engine
    session_factory: sessionmaker[Session]
    platform: PlatformPort
    mail: MailSender
    renderer: EmailRenderer
    enqueue: Enqueue
    # None: publish one at a time through ``enqueue``.
    enqueue_many: EnqueueMany | None = None
    clock: Callable[[], datetime] = utcnow
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    relay_settle: timedelta = timedelta(seconds=5)
    # Vendors whose summary of that local day is known to be sent: the relay need not ask the database again.
    summaries_sent: dict[str, date] = field(default_factory=dict)
    # Signs the vendor page's links; None when DUNLINK_SECRET_KEY is unset (no vendor makes links by hand).
    tokens: VendorTokens | None = None
    # One Digistore24 API client per vendor (its own key), made on first use.
    link_clients: dict[str, DigistoreClient] = field(default_factory=dict)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.session_factory)

    def payment_links(self, vendor: Vendor) -> DigistoreClient:
        client = self.link_clients.get(vendor.slug)
        if client is None:
            timeout = self.settings.platform_timeout
            client = self.link_clients[vendor.slug] = DigistoreClient(
                vendor.digistore24_api_key, vendor=vendor.slug, base_url=self.settings.digistore24_url,
                read_timeout=timeout, connect_timeout=min(3.0, timeout))
        return client

    def at(self, now: datetime) -> Services:
        return dataclasses.replace(self, clock=lambda: now, enqueue=lambda *_: None)


def build_services(config: Settings | None = None, *, enqueue: Enqueue, enqueue_many: EnqueueMany | None = None
                   ) -> Services:
    """Everything a process needs, from its settings and the vendors file. ``enqueue`` publishes wake-ups: each
    entry point passes its own (Celery's in workers and the api, a list in tests), so this module needs none."""
    config = config or settings()
    vendors = load_checked_vendors(config)
    engine = make_engine(config.database_url)
    return Services(
        settings=config,
        vendors=vendors,
        engine=engine,
        session_factory=make_session_factory(engine),
        platform=HttpPlatform(config.platform_url, config.platform_token, read_timeout=config.platform_timeout,
                              connect_timeout=min(3.0, config.platform_timeout)),
        mail=SmtpSender.from_url(config.smtp_url),
        renderer=EmailRenderer(),
        enqueue=enqueue,
        enqueue_many=enqueue_many,
        tokens=VendorTokens(config.secret_key) if config.secret_key else None,
    )
