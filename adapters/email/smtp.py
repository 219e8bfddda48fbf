"""Sending over SMTP as ``DUNLINK_SMTP_URL`` says: plain, STARTTLS or implicit TLS, with AUTH.

One connection per message: dunning mail is a trickle per case, a fresh connection has no stale state
to recover from after a server restart, and every socket operation is bounded by ``timeout``.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses
from typing import Literal
from urllib.parse import unquote, urlsplit

from adapters.email.port import MailError, PermanentMailError, TransientMailError, error_for_reply

log = logging.getLogger(__name__)

Security = Literal["plain", "starttls", "tls"]
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEMES: dict[str, tuple[Security, int]] = {
    "smtp": ("plain", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("tls", 465),
}


def mask_address(address: str) -> str:
    """``anna@example.com`` → ``a***@example.com``: enough to tell buyers apart in logs, not to mail them."""
    local, at, domain = address.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


@dataclass(frozen=True)
class SmtpSender:
    """A :class:`~adapters.email.port.MailSender` that speaks SMTP; the password never shows in repr or logs."""

    host: str
    port: int
    security: Security = "plain"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = field(default=None, repr=False, compare=False)
    local_hostname: str | None = None

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> SmtpSender:
        """Parse ``DUNLINK_SMTP_URL``; errors name the problem, never echo the URL (it may hold a password)."""
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError("DUNLINK_SMTP_URL: scheme must be smtp://, smtp+starttls:// or smtps://")
        if not parts.hostname:
            raise ValueError("DUNLINK_SMTP_URL: must name a host, e.g. smtp://127.0.0.1:1025")
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            raise ValueError("DUNLINK_SMTP_URL: the port must be a number from 1 to 65535")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("DUNLINK_SMTP_URL: must be scheme://[user:password@]host[:port], nothing after it")
        if _BAD_ESCAPE.search(parts.netloc.rpartition("@")[0]):
            raise ValueError("DUNLINK_SMTP_URL: user name and password must be percent-encoded "
                             "(% followed by two hex digits)")
        security, default_port = _SCHEMES[parts.scheme]
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        if password is not None and security == "plain":
            raise ValueError("DUNLINK_SMTP_URL: a password over smtp:// would travel in clear text; "
                             "use smtp+starttls:// or smtps://")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        return cls(host=parts.hostname, port=port or default_port, security=security, username=username,
                   password=password, timeout=timeout, ssl_context=ssl_context)

    def _context(self) -> ssl.SSLContext:
        # The default context verifies the certificate and host name; SSL_CERT_FILE can add a trust anchor.
        return self.ssl_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            return smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.local_hostname,
                                    timeout=self.timeout, context=self._context())
        client = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout)
        if self.security == "starttls":
            try:
                client.starttls(context=self._context())
            except BaseException:
                client.close()
                raise
        return client

    def send(self, message: EmailMessage) -> None:
        """Hand ``message`` to the server; raise a :class:`MailError` that says whether to try again."""
        recipients = [address for _, address in getaddresses(message.get_all("To", []))]
        where = f"{self.host}:{self.port}"
        try:
            with self._connect() as client:
                client.ehlo_or_helo_if_needed()
                if self.username is not None:
                    client.login(self.username, self.password or "")
                # Parts are 8bit (see adapters.email.message); say so where the server understands it.
                options = ["BODY=8BITMIME"] if client.has_extn("8bitmime") else []
                refused = client.send_message(message, mail_options=options)
        except MailError:
            raise
        except Exception as exc:
            error = classify(exc)
            log.warning("mail not sent", extra={"smtp_server": where, "message_id": message["Message-ID"],
                                                "to": [mask_address(a) for a in recipients],
                                                "error": type(error).__name__, "reason": str(error)})
            raise error from exc
        if refused:
            # Some recipients took it: a retry would send it to them twice, so a person decides.
            raise PermanentMailError("refused: " + ", ".join(
                f"{mask_address(address)} ({code})" for address, (code, _) in refused.items()))
        log.info("mail sent", extra={"smtp_server": where, "message_id": message["Message-ID"],
                                     "to": [mask_address(a) for a in recipients]})


def classify(exc: BaseException) -> MailError:
    """Translate what smtplib, ssl and sockets raise into the port's tree."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        replies = list(exc.recipients.values())
        codes = [code for code, _ in replies]
        text = "; ".join(_decode(reply) for _, reply in replies)
        # Only when every refusal is temporary is a later attempt worth it.
        code = max(codes) if codes else 550
        return error_for_reply(code, f"recipient refused: {text}")
    if isinstance(exc, smtplib.SMTPResponseException):
        return error_for_reply(exc.smtp_code, _decode(exc.smtp_error))
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientMailError(f"server disconnected: {exc}")
    if isinstance(exc, smtplib.SMTPException):
        # No STARTTLS, no AUTH mechanism in common, SMTPUTF8 unsupported: configuration, not luck.
        return PermanentMailError(str(exc))
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentMailError(f"TLS certificate not trusted: {exc.verify_message}")
    if isinstance(exc, socket.gaierror):
        return TransientMailError(f"host name lookup failed: {exc}")
    if isinstance(exc, OSError | EOFError):
        # Refused, reset, timed out, TLS torn down mid-handshake: the network, which may recover.
        return TransientMailError(f"{type(exc).__name__}: {exc}")
    return PermanentMailError(f"{type(exc).__name__}: {exc}")


def _decode(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
