"""A local mail catcher: a real SMTP server that keeps what it receives, for demos and tests.

Every message is saved as ``<n>-<slug>.eml`` with its HTML part beside it as ``<n>-<slug>.html``, so
whoever runs the demo can open exactly what a buyer would see. Tests read the parsed messages with
their SMTP envelope, since what crossed the wire is what counts.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the server got it: the envelope, the parsed message and where it was saved."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    eml_path: Path
    html_path: Path | None
    authenticated: bool = False
    mail_options: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        return "" if part is None else str(part.get_content())

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        return "" if part is None else str(part.get_content())


def slug(subject: str, *, limit: int = 48) -> str:
    """A file-name-safe ASCII rendering of a subject ("Ihre Zahlung für X" → "ihre-zahlung-fur-x")."""
    ascii_text = unicodedata.normalize("NFKD", subject).encode("ascii", "ignore").decode("ascii")
    return _SLUG.sub("-", ascii_text.lower()).strip("-")[:limit].rstrip("-") or "message"


class _Handler:
    def __init__(self, catcher: MailCatcher) -> None:
        self._catcher = catcher

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self._catcher.refuse.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        self._catcher._keep(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.original_content,
                            authenticated=bool(session.authenticated), mail_options=tuple(envelope.mail_options))
        return "250 Message accepted for delivery"


class MailCatcher:
    """An aiosmtpd server on its own thread and event loop; ``port=0`` picks a free port.

    ``starttls_context`` offers STARTTLS, ``tls_context`` makes it implicit TLS (SMTPS); ``credentials``
    requires AUTH with that user and password. ``refuse`` maps a recipient to the reply it gets, such as
    ``"550 5.1.1 mailbox unavailable"`` or ``"451 4.3.0 try again later"``.
    """

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0, *,
                 starttls_context: ssl.SSLContext | None = None, tls_context: ssl.SSLContext | None = None,
                 credentials: tuple[str, str] | None = None, refuse: Mapping[str, str] | None = None) -> None:
        self.folder = folder
        self.host = host
        self.port = port
        self.refuse = dict(refuse or {})
        self._starttls_context = starttls_context
        self._tls_context = tls_context
        self._credentials = credentials
        self._received: list[ReceivedMail] = []
        self._lock = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, *, timeout: float = 10.0) -> list[ReceivedMail]:
        """The received messages once there are at least ``count``; raise TimeoutError after ``timeout``."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._received) >= count, timeout=timeout):
                raise TimeoutError(f"expected {count} messages within {timeout}s, got {len(self._received)}")
            return list(self._received)

    def start(self) -> MailCatcher:
        self.folder.mkdir(parents=True, exist_ok=True)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="mail-catcher", daemon=True)
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._serve(), loop)
        self._server = started.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self) -> asyncio.base_events.Server:
        loop = asyncio.get_running_loop()
        return await loop.create_server(self._protocol, self.host, self.port, ssl=self._tls_context)

    def _protocol(self) -> SMTP:
        return SMTP(
            _Handler(self),
            hostname="dunlink-mail-catcher",
            tls_context=self._starttls_context,
            require_starttls=self._starttls_context is not None,
            authenticator=self._authenticate if self._credentials else None,
            # aiosmtpd only knows STARTTLS as TLS: under implicit TLS it would warn that AUTH goes in clear
            # (it does not). There AUTH is offered, not enforced, and ReceivedMail.authenticated tells.
            auth_required=self._credentials is not None and self._tls_context is None,
            auth_require_tls=self._tls_context is None,
            loop=self._loop,
        )

    def _authenticate(self, server: SMTP, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        if isinstance(data, LoginPassword) and self._credentials is not None:
            user, password = self._credentials
            ok = data.login.decode("utf-8") == user and data.password.decode("utf-8") == password
            # handled=False: aiosmtpd answers 535 itself; True would leave the client waiting.
            return AuthResult(success=ok, handled=False)
        return AuthResult(success=False, handled=False)

    @staticmethod
    async def _shutdown(server: asyncio.base_events.Server) -> None:
        server.close()
        await server.wait_closed()
        # Sessions still open (a client that never said QUIT) would otherwise die as pending tasks.
        sessions = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)

    def stop(self) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        if loop is None or thread is None:
            return
        if server is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(server), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
        self._loop = self._server = self._thread = None

    def __enter__(self) -> MailCatcher:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _keep(self, mail_from: str, rcpt_tos: tuple[str, ...], raw: bytes, *, authenticated: bool,
              mail_options: tuple[str, ...]) -> None:
        # SMTP carries CRLF; parsed content should read like any Python string, with plain newlines.
        message = BytesParser(policy=policy.default).parsebytes(raw.replace(b"\r\n", b"\n"))
        assert isinstance(message, EmailMessage)
        with self._lock:
            number = len(self._received) + 1
            stem = f"{number:04d}-{slug(str(message.get('Subject', '')))}"
            eml_path = self.folder / f"{stem}.eml"
            eml_path.write_bytes(raw)
            html_path: Path | None = None
            html = message.get_body(("html",))
            if html is not None:
                html_path = self.folder / f"{stem}.html"
                html_path.write_text(str(html.get_content()), encoding="utf-8")
            self._received.append(ReceivedMail(mail_from, rcpt_tos, message, eml_path, html_path, authenticated,
                                               mail_options))
            self._lock.notify_all()
