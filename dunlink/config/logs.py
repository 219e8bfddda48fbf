"""Structured logs with structlog: JSON when not on a terminal, readable on one, the same for every line.

Our own structlog calls and every standard-library logger (Celery, uvicorn, httpx, the SMTP adapter,
aiosmtpd) end up in one handler on the root logger whose ``ProcessorFormatter`` renders them alike, so an
operator greps one format and a log shipper parses one schema.

The last processors before rendering mask buyer email addresses and drop secrets in *every* line, whatever
logger produced it, including exception tracebacks: logs may be shipped anywhere and must carry neither
personal data nor credentials. Redaction works on field names (``token``, ``secret``, ``password``,
``signature``, ``authorization``) and on shapes inside text (``Bearer …``, passwords in URLs).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from functools import lru_cache
from typing import IO, Any, cast
from urllib.parse import quote

import structlog
from structlog.typing import EventDict, Processor

# An address as it may appear in any text: the local part is every character an address may hold (RFC 5322
# atext and dots, any script) up to a delimiter; the domain has labels in any script and a top-level domain
# of letters (or an IDNA one), so ``celery@host`` node names stay readable. Also its URL-encoded form.
_LOCAL = r"[^\s<>()\[\]\\;:\"@]"  # commas too: "zelda,buyer@" is a typo'd address, masked whole
_DOMAIN = r"(?:[\w-]+\.)+(?:[^\W\d_]{2,}|xn--[\w-]+)"
_EMAIL = re.compile(rf"({_LOCAL}){_LOCAL}*@({_DOMAIN})")
_EMAIL_ENCODED = re.compile(rf"([\w.+-])[\w.+%-]*?%40({_DOMAIN})", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)[^\s@/]+@")
_BEARER = re.compile(r"\b(Bearer|Basic|bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_ASSIGNED = re.compile(
    r"(?i)\b(\w*(?:password|passwd|secret|token|api[_-]?key))(\s*[=:]\s*)(?:'[^']*'|\"[^\"]*\"|[^\s,;&\"']+)")
_SECRET_KEYS = ("secret", "password", "passwd", "token", "authorization", "signature", "api_key", "apikey")
_ASSIGNED_WORDS = ("password", "passwd", "secret", "token", "api_key", "api-key", "apikey")
REDACTED = "[redacted]"
# Fields that look like email addresses but identify a message, not a person (RFC 5322 Message-ID).
_NOT_PERSONAL = frozenset({"message_id", "message-id"})
# Libraries whose INFO lines are noise in a payment pipeline's log (one line per HTTP request or SMTP verb).
# httpx logs every request at INFO; the platform adapter logs its retries and the pipeline each step's
# outcome, so that line would only repeat them (at a cost on every call).
_QUIET = {"httpx": logging.WARNING, "httpcore": logging.WARNING, "hpack": logging.WARNING, "mail.log": logging.WARNING,
          "asyncio": logging.WARNING, "kombu": logging.WARNING, "amqp": logging.WARNING}


_known_secrets: set[str] = set()
_KNOWN: re.Pattern[str] | None = None
_SHORTEST_SECRET = 6  # shorter values would redact ordinary words; start-up takes no secret under 16 characters


def redact_secrets(values: Iterable[str | None]) -> None:
    """Remove these exact values (and their URL-encoded forms) from every log line from now on.

    The process's own secrets (the platform token, the passwords in its URLs, the vendors' IPN secrets) are
    registered when settings and the vendors file are read, so they are redacted wherever they appear: in a
    platform's error message that quotes the token, in an exception, in a line whose shape no pattern knows.
    """
    global _KNOWN
    new = {form for value in values if value and len(value) >= _SHORTEST_SECRET
           for form in (value, quote(value, safe=""))} - _known_secrets
    if new:
        _known_secrets.update(new)
        _KNOWN = re.compile("|".join(re.escape(v) for v in sorted(_known_secrets, key=len, reverse=True)))


def mask_email(text: str) -> str:
    """``anna@example.com`` → ``a***@example.com``: the domain stays for debugging deliverability."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)
    if "%40" in text:
        text = _EMAIL_ENCODED.sub(lambda m: f"{m.group(1)}***%40{m.group(2)}", text)
    return text


def _may_need_scrubbing(text: str) -> bool:
    """False only for text none of the patterns can match: most values (ids, names, numbers) skip the regexes."""
    if "@" in text or "%40" in text or "earer" in text or "Basic" in text:  # emails, URL passwords, credentials
        return True
    if "=" in text or ":" in text:
        lowered = text.lower()
        return any(word in lowered for word in _ASSIGNED_WORDS)
    return False


def scrub_text(text: str) -> str:
    """Mask emails and remove credentials embedded in free text (known secrets, URL passwords, bearer tokens,
    ``password=``)."""
    if _KNOWN is not None and _KNOWN.search(text):
        text = _KNOWN.sub(REDACTED, text)
    if not _may_need_scrubbing(text):
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _ASSIGNED.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return mask_email(text)


@lru_cache(maxsize=4096)
def _is_secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SECRET_KEYS)


@lru_cache(maxsize=4096)
def _kept_as_is(key: str) -> bool:
    return key.startswith("_") or key.lower() in _NOT_PERSONAL  # structlog's bookkeeping; Message-IDs


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if value is None or value is True or value is False or type(value) is int:
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if isinstance(k, str) and _is_secret_key(k) else _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    # Anything else is rendered with str() by the renderers: scrub that text, not the object.
    return scrub_text(str(value))


def scrub(_: Any, __: str, event: EventDict) -> EventDict:
    """structlog processor: redact secret fields, mask emails and credentials in every other field."""
    for key in list(event):
        if _kept_as_is(key):
            continue
        if _is_secret_key(key):
            event[key] = REDACTED
        else:
            event[key] = _scrub_value(event[key])
    return event


def _drop_color_message(_: Any, __: str, event: EventDict) -> EventDict:
    # uvicorn duplicates its message with ANSI colours under this key.
    event.pop("color_message", None)
    return event


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(*, level: int | str = logging.INFO, json_output: bool | None = None,
                      stream: IO[str] | None = None) -> None:
    """Route structlog and the standard library through one masking formatter on ``stream`` (stderr).

    Safe to call again (Celery calls it in each process through its ``setup_logging`` signal): the root
    logger's handlers are replaced, not added to.
    """
    stream = stream if stream is not None else sys.stderr
    as_json = not _isatty(stream) if json_output is None else json_output
    renderer: Processor = (structlog.processors.JSONRenderer(default=str) if as_json
                           else structlog.dev.ConsoleRenderer(colors=_isatty(stream)))
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *_shared_processors(),
                    structlog.processors.StackInfoRenderer(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _drop_color_message,
                    structlog.processors.format_exc_info, scrub, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    global _json_handler
    _json_handler = handler if as_json else None
    root.setLevel(level)
    for name, quiet in _QUIET.items():
        logging.getLogger(name).setLevel(quiet)
    # Loggers that libraries configured with their own handlers (uvicorn, Celery) log through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.redirected"):
        library = logging.getLogger(name)
        library.handlers = []
        library.propagate = True


_json_handler: logging.StreamHandler[IO[str]] | None = None


def log_lines(logger_name: str, lines: Sequence[tuple[str, Mapping[str, Any]]], *, level: int = logging.INFO) -> None:
    """Many lines of one logger at once (``(event, fields)`` each), e.g. one per webhook of a batch.

    With the JSON output of :func:`configure_logging` in place, the lines are rendered as every other line
    (same fields, same masking, same renderer) but without a trip through structlog and the logging module
    per line, and written to the stream at once: a few microseconds a line instead of some seventy. In any
    other set-up (a terminal, handlers added since) each line goes through structlog as usual.
    """
    logger = logging.getLogger(logger_name)
    if not lines or not logger.isEnabledFor(level):
        return
    handler = _json_handler
    root = logging.getLogger()
    if handler is None or root.handlers != [handler] or logger.handlers or logger.filters or handler.filters:
        bound = structlog.get_logger(logger_name)
        for event, fields in lines:
            bound.log(level, event, **fields)
        return
    level_name = logging.getLevelName(level).lower()
    # The fields every line gets and the masking, from the same processors as configure_logging's chain.
    chain = [*_shared_processors(), scrub]
    rendered = []
    for event, fields in lines:
        entry: EventDict = {**fields, "event": event}
        for processor in chain:
            entry = cast(EventDict, processor(logger, level_name, entry))
        rendered.append(json.dumps(entry, default=str))
    text = "\n".join(rendered) + "\n"
    handler.acquire()
    try:
        handler.stream.write(text)
        handler.flush()
    finally:
        handler.release()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def bind_case(context: MutableMapping[str, Any]) -> None:
    """Put case, vendor and order on every line logged from here on in this task or request."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in context.items() if v is not None})


def clear_context() -> None:
    structlog.contextvars.clear_contextvars()
