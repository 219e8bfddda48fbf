"""The unit of work: one transaction, rolled back unless the caller commits."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.orm import Session, sessionmaker

from adapters.db.repositories import CaseRepository, EmailRepository, InboxRepository
from adapters.db.summaries import SummaryRepository


class SqlUnitOfWork:
    """``with uow: ...; uow.commit()`` — leaving the block without ``commit()`` rolls everything back."""

    session: Session
    cases: CaseRepository
    inbox: InboxRepository
    emails: EmailRepository
    summaries: SummaryRepository

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def __enter__(self) -> SqlUnitOfWork:
        self.session = self._session_factory()
        self.cases = CaseRepository(self.session)
        self.inbox = InboxRepository(self.session)
        self.emails = EmailRepository(self.session)
        self.summaries = SummaryRepository(self.session)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.session.rollback()
        finally:
            self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()
