"""Fresh databases for tests: a SQLite file in a temporary folder, or a new PostgreSQL database.

Every test gets a database of its own, so no test sees another's rows and runs never share state.
PostgreSQL databases are cloned from a migrated template made once per test run, which is fast.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from adapters.db.migrate import upgrade

ADMIN_URL = os.environ.get("DUNLINK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(_conninfo(ADMIN_URL), autocommit=True, connect_timeout=5)


def database_url(name: str) -> str:
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def create_template() -> str:
    """A migrated PostgreSQL database to clone test databases from; returns its name."""
    name = f"dunlink_tpl_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    upgrade(database_url(name))
    return name


def drop_database(name: str) -> None:
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_postgres(template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (migrated when cloned from ``template``), dropped afterwards."""
    name = f"dunlink_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield database_url(name)
    finally:
        drop_database(name)


def fresh_sqlite(folder: Path, *, migrated: bool = True) -> str:
    url = f"sqlite:///{folder / 'dunlink.db'}"
    if migrated:
        upgrade(url)
    return url


@contextmanager
def database_away(engine: Engine, database_url: str) -> Iterator[None]:
    """Make the database unreachable as an outage would, then bring it back as it was.

    PostgreSQL refuses new connections and ends the open ones. A SQLite file can't be taken from a connection
    that has it open, so ``engine``'s idle connections are closed and the file is moved away (a folder stands
    in its place); a connection checked out meanwhile keeps working on the moved file.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        parked = path.with_name("parked")
        parked.mkdir()
        engine.dispose()
        for file in path.parent.glob(path.name + "*"):
            shutil.move(file, parked / file.name)
        path.mkdir()  # where the file was, nothing SQLite can open
        try:
            yield
        finally:
            engine.dispose()
            path.rmdir()
            for file in parked.iterdir():
                shutil.move(file, path.parent / file.name)
            parked.rmdir()
        return
    try:
        with postgres_away(url.database or ""):
            yield
    finally:
        engine.dispose()  # its pooled connections were ended with the outage


@contextmanager
def postgres_away(name: str) -> Iterator[None]:
    """PostgreSQL database ``name`` refuses new connections and its open ones are ended, until the block ends."""
    with _admin() as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
