"""What a vendor's footer may hold: the imprint and the support link, checked alike when the vendors file is
read and when an email is rendered. Standard library only, so reading the vendors file loads no templates."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# An imprint is a handful of lines (company, address, managing director, register, VAT id, contact): the bounds
# keep a footer a footer, whatever is pasted into the vendors file.
IMPRINT_MAX_LINES = 12
IMPRINT_MAX_CHARS = 1000


def is_support_url(url: str) -> bool:
    """An https URL with a host, or http on a loopback host (rehearsals): a page the buyer can open and trust,
    with nothing (spaces, quotes, controls, a user name) that could mislead or leave the ``href``."""
    if not url.isprintable() or any(c.isspace() or c in "\"'<>\\`" for c in url):
        return False
    parts = urlsplit(url)
    try:
        host, _ = parts.hostname, parts.port
    except ValueError:
        return False
    if not host or parts.username is not None or parts.scheme not in ("https", "http"):
        return False
    if parts.scheme == "https":
        return True
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def imprint_problem(text: str) -> str | None:
    """Why ``text`` cannot be a vendor's imprint, or None: bounded, printable, line breaks (``\\n``) allowed."""
    lines = text.strip().split("\n")
    if not text.strip():
        return "must be a non-empty text"
    if len(text) > IMPRINT_MAX_CHARS or len(lines) > IMPRINT_MAX_LINES:
        return f"at most {IMPRINT_MAX_LINES} lines and {IMPRINT_MAX_CHARS} characters"
    if not all(line.isprintable() for line in lines):
        return "must be printable text (line breaks are fine, tabs and other control characters are not)"
    return None
