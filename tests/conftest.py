"""Fixtures shared by every tier: fresh databases on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import db

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    name = db.create_template()
    yield name
    db.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of this test's own, on each backend in turn."""
    if request.param == "sqlite":
        yield db.fresh_sqlite(tmp_path)
        return
    template = request.getfixturevalue("postgres_template")
    with db.fresh_postgres(template) as url:
        yield url


@pytest.fixture
def postgres_url(postgres_template: str) -> Iterator[str]:
    with db.fresh_postgres(postgres_template) as url:
        yield url
