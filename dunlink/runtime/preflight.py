"""What a process checks before it starts work: its database is there and migrated, its broker answers.

A process that would serve webhooks or run tasks against a database with no schema answers ``503`` or fails
every task with "no such table", far from the cause; worse, SQLite would create an empty file wherever
``DUNLINK_DATABASE_URL`` happens to point. So ``dunlink api``, ``dunlink worker`` (also when started as
``celery -A workers worker``) and ``dunlink due`` refuse to start with one line naming ``dunlink db upgrade``.

Every failure here is one line for the operator (:class:`StartupError`), with the database or broker named and
its password hidden, never a chained traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kombu.connection import Connection
from psycopg import Error as PsycopgError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from adapters.db.migrate import current_revision, known_revisions
from dunlink.config.logs import scrub_text

BROKER_TIMEOUT_S = 3.0


class StartupError(Exception):
    """The process cannot start: the message is one line for the operator; exit status 1."""


def safe_database_url(url: str) -> str:

    return make_url(url).render_as_string(hide_password=True)


def safe_broker_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def first_line(exc: BaseException) -> str:
    """The driver's own message (not SQLAlchemy's wrapper with its SQL and link), first line, secrets removed."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return scrub_text(lines[0] if lines else type(cause).__name__)


def database_trouble(exc: BaseException, url: str, *, hint: str) -> str | None:
    """One line saying the database at ``url`` could not answer, or None when ``exc`` is not a database error."""

    if not isinstance(exc, SQLAlchemyError | PsycopgError):
        return None
    return f"the database at {safe_database_url(url)} cannot answer: {first_line(exc)} ({hint})"


def check_schema(url: str) -> None:
    """Raise :class:`StartupError` unless the database at ``url`` answers and its schema is migrated to this
    dunlink's latest revision. A SQLite file that does not exist is not created."""
    alembic = logging.getLogger("alembic")  # its start-up chatter ("setup plugin ...") is not news to anyone here
    level = alembic.level
    alembic.setLevel(logging.WARNING)
    try:
        _check_schema(url)
    finally:
        alembic.setLevel(level)


def _check_schema(url: str) -> None:


    parsed = make_url(url)
    where = safe_database_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and not database.startswith("file:") \
            and not Path(database).exists():
        raise StartupError(f"no database at {Path(database).resolve()}: run 'dunlink db upgrade' to create it, "
                           "or set DUNLINK_DATABASE_URL to the database dunlink uses")
    try:
        revision = current_revision(url)
    except SQLAlchemyError as exc:
        raise StartupError(f"the database at {where} cannot answer: {first_line(exc)} "
                           "(is DUNLINK_DATABASE_URL right, and the database server up?)") from None
    head, known = known_revisions(url)
    if revision is None:
        raise StartupError(f"the database at {where} has no dunlink schema: run 'dunlink db upgrade' first")
    if revision != head and revision in known:
        raise StartupError(f"the database at {where} is at revision {revision}, this dunlink needs {head}: "
                           "run 'dunlink db upgrade' first")
    # A revision this dunlink does not know was made by a newer release: it runs on, as in a rolling upgrade.


def broker_trouble(url: str, options: dict[str, Any], *, timeout: float = BROKER_TIMEOUT_S) -> str | None:
    """None when the broker at ``url`` takes a connection within ``timeout`` seconds, else one line naming it."""

    try:
        with Connection(url, transport_options=options,  # type: ignore[no-untyped-call]
                        connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=0, timeout=timeout)
    except Exception as exc:  # whatever the transport raises: the line is all that is wanted
        why = first_line(exc).rstrip(".")
        return f"cannot reach the broker at {safe_broker_url(url)} (DUNLINK_BROKER_URL): {why}; retrying until it does"
    return None
