"""Structured logs with structlog: JSON when not on a terminal, readable on one.

Buyer email addresses are masked wherever they appear in a log line and secrets are dropped, so logs can be
shipped anywhere without carrying personal data or credentials.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
_SECRET_KEYS = ("secret", "password", "token", "authorization", "signature")


def mask_email(text: str) -> str:
    """``anna@example.com`` → ``a***@example.com``."""
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)


def _scrub(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(word in key.lower() for word in _SECRET_KEYS):
            event[key] = "[redacted]"
        elif isinstance(event[key], str):
            event[key] = mask_email(event[key])
    return event


def configure_logging(*, level: int = logging.INFO, json_output: bool | None = None) -> None:
    as_json = not sys.stderr.isatty() if json_output is None else json_output
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
