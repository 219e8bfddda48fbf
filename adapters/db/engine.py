"""Engines for SQLite (WAL, busy timeout, immediate write transactions) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 15_000


def make_engine(url: str | URL, *, pool_size: int = 5, max_overflow: int | None = None,
                connect_args: dict[str, Any] | None = None) -> Engine:
    """An engine for ``url``; SQLite files get their folder created and are tuned for several processes.
    On PostgreSQL ``max_overflow`` defaults to ``pool_size`` and ``connect_args`` add to the connect timeout.

    No pre-ping on checkout (it costs a round trip per unit of work): a connection that died with a server
    restart fails its statement, the webhook answers 503 and a task is published again by the relay.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _tune_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size if max_overflow is None else max_overflow,
                         pool_recycle=1800, connect_args={"connect_timeout": 5, **(connect_args or {})})


def _tune_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and cannot upgrade a read lock safely under
    # concurrency; SQLAlchemy's documented recipe takes control and begins every transaction IMMEDIATE,
    # so concurrent writers queue on the busy timeout instead of failing with "database is locked".
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)
