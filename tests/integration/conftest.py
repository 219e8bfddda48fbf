"""An engine and a unit of work on the test's own database (``database_url``: SQLite, then PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.uow import SqlUnitOfWork


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def uow(engine: Engine) -> SqlUnitOfWork:
    return SqlUnitOfWork(make_session_factory(engine))
