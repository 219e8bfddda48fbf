"""Whether a payment link a vendor pasted may be emailed to a buyer.

A vendor who makes the replacement by hand pastes the link CopeCart generated; dunlink then sends it to the
buyer in the vendor's name. A typo, a link to a look-alike host, or a page that merely mentions CopeCart must
never reach a buyer, so a link passes only when it is plainly a web address on one of the vendor's payment
hosts (``payment_hosts`` in the vendors file: each host and its subdomains), over https, or over plain http on
a loopback host for rehearsals on one machine.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

# Far longer than any checkout link, short enough for a column and an email line.
MAX_LINK = 2048
# What a URL may carry unescaped (RFC 3986's unreserved, reserved and the percent sign): a mail program that
# finds a link in text ends it at a quote, a bracket or a space, so anything else could make it show another.
_URL_CHARACTERS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_NOT_IN_A_LINK = frozenset("'()*$;,!")
# A host name: letters, digits and hyphens in dot-separated labels (at most one trailing dot).
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
DEFAULT_PAYMENT_HOSTS = ("copecart.com",)


class LinkProblem(StrEnum):
    """Why a pasted link is refused, as the vendor page words it."""

    NOT_A_URL = "not_a_url"
    SCHEME_NOT_ALLOWED = "scheme_not_allowed"
    HOST_NOT_ALLOWED = "host_not_allowed"


@dataclass(frozen=True, slots=True)
class RefusedLink:
    problem: LinkProblem
    host: str | None = None


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): this machine, never a buyer's checkout."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """``host`` is one of ``allowed`` or a subdomain of one (``checkout.copecart.com`` under ``copecart.com``)."""
    host = host.lower().rstrip(".")
    return any(host == item or host.endswith("." + item) for item in (a.lower().strip(".") for a in allowed))


def refused_link(url: str, allowed_hosts: Iterable[str]) -> RefusedLink | None:
    """Why ``url`` may not be sent to a buyer, or None when it may."""
    if not url or len(url) > MAX_LINK or not url.isascii() or not _URL_CHARACTERS.fullmatch(url):
        return RefusedLink(LinkProblem.NOT_A_URL)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return RefusedLink(LinkProblem.NOT_A_URL)
    host = parts.hostname or ""
    if not host:
        return RefusedLink(LinkProblem.NOT_A_URL)
    if parts.scheme not in ("http", "https"):
        return RefusedLink(LinkProblem.SCHEME_NOT_ALLOWED, host)
    if "@" in parts.netloc:  # https://copecart.com@evil.example/ reads as CopeCart and goes elsewhere
        return RefusedLink(LinkProblem.HOST_NOT_ALLOWED, host)
    if parts.scheme == "http" and not is_loopback(host):
        return RefusedLink(LinkProblem.SCHEME_NOT_ALLOWED, host)
    if port is not None and port != 443 and not is_loopback(host):
        return RefusedLink(LinkProblem.HOST_NOT_ALLOWED, f"{host}:{port}")
    if not _plain_host(host) or any(c in _NOT_IN_A_LINK or c == "%" for c in parts.netloc):
        return RefusedLink(LinkProblem.HOST_NOT_ALLOWED, host)
    if not host_allowed(host, allowed_hosts):
        return RefusedLink(LinkProblem.HOST_NOT_ALLOWED, host)
    return None


def _plain_host(host: str) -> bool:
    """A plain host name or an IP address: nothing a reader could mistake for another host."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host.lower().removesuffix(".").split(".")
    return all(_LABEL.fullmatch(label) for label in labels)
