"""Serving an HTTP app (the webhook app, the sandbox) on a socket that is bound before anything is said, and
bounding what one client can hold of the webhook app.

The socket is bound and listening before the process prints that it listens, so the line is true when it
appears, and a port already in use is one clear line and exit status 1 instead of a banner followed by
uvicorn's bind error. Whoever waits for the process (the demo, the soak, the tests) can trust the line: no
other program answers on a port this process said it listens on.

The webhook port faces the internet, and uvicorn bounds only the idle time between two requests
(``timeout_keep_alive``): a client that sends its request head or body a byte at a time, or never sends a
byte, holds its connection for ever, and httptools buffers a request head of any size. :class:`ConnectionLimits`
adds what is missing, in a subclass of uvicorn's httptools protocol (:func:`bounded_protocol`):

* a request head (request line and headers) larger than ``max_head_bytes`` is answered ``431`` and the
  connection closed, counted as it arrives, before the parser has buffered more than that;
* a head must arrive whole within ``header_timeout`` of its first byte (of the connection, for the first
  request): else ``408`` and closed; a connection that never sends a byte is closed after the same time;
* a body must arrive whole within ``body_timeout`` of the end of its head: else ``408`` and closed (the app
  sees the client gone, and logs one line);
* idle keep-alive connections are closed after ``keep_alive`` seconds (uvicorn's own timer);
* at most ``max_connections`` connections are open. One more evicts the connection that has waited longest
  without a request in progress (idle, or still sending its head); only when every connection is busy with a
  request is the new one closed at once. So slow and idle clients can never lock a real IPN out: its head
  arrives in one packet and is complete long before it could become the oldest waiting connection.
  uvicorn's own ``limit_concurrency`` is not used: it counts idle and slow connections too and answers
  ``503`` to the next request past the limit, which is exactly what a slow-client flood wants.

Memory is bounded by ``max_connections`` times what one connection may hold (a head of ``max_head_bytes``,
a body of at most the app's 256 KiB); the process's open-file limit is raised to what the connections need.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

if TYPE_CHECKING:
    from dunlink.config.settings import Settings

LISTENING = "listening on"
MAX_HEAD_BYTES = 16 * 1024  # h11's default, twice gunicorn's per-field limit; an IPN's head is under 1 KiB
# Files the process needs besides its connections: database and broker connections, logs, probes, libraries.
FILES_RESERVED = 256
# Set in a request's scope when the server cut it off for taking longer than the body time limit.
BODY_TIMED_OUT = "dunlink.body_timed_out"

log = structlog.get_logger("dunlink.api")


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may hold of the server (see the module's docstring); seconds and bytes."""

    max_connections: int = 2048
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    keep_alive: int = 5
    max_head_bytes: int = MAX_HEAD_BYTES

    @classmethod
    def from_settings(cls, config: Settings) -> ConnectionLimits:
        return cls(max_connections=config.api_max_connections, header_timeout=config.api_header_timeout,
                   body_timeout=config.api_body_timeout, keep_alive=config.api_keep_alive)


def _answer(status: str, text: str) -> bytes:
    body = text.encode("ascii")
    return (f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode("ascii") + body


_HEAD_TIMEOUT = _answer("408 Request Timeout", "request head not received in time")
_BODY_TIMEOUT = _answer("408 Request Timeout", "request body not received in time")


def bounded_protocol(limits: ConnectionLimits, *,
                     closed: Callable[[str], None] | None = None) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with ``limits`` enforced; ``closed(reason)`` is called for each connection
    the limits close: ``header_timeout``, ``body_timeout``, ``head_too_large``, ``evicted`` or ``over_limit``."""

    too_large = _answer("431 Request Header Fields Too Large",
                        f"request head larger than {limits.max_head_bytes // 1024} KiB")
    # Connections without a request in progress (new, idle between requests, or still sending a head),
    # oldest first: the ones to close when the server is full.
    waiting: OrderedDict[BoundedHttpToolsProtocol, None] = OrderedDict()

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _in_head = True  # between two requests, or receiving a head
        _head_bytes = 0  # bytes of the current head received so far (counted per read)
        _tail = b""  # the last bytes of the head so far, to find its end across two reads
        _boundary = False  # the parser completed a head or a message during the current read

        # -- connections ---------------------------------------------------------------------------------

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections and not self._make_room():
                self._close("over_limit")
                return
            waiting[self] = None
            self._arm(limits.header_timeout, self._head_timed_out)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            waiting.pop(self, None)
            super().connection_lost(exc)

        def _make_room(self) -> bool:
            while waiting:
                oldest, _ = waiting.popitem(last=False)
                if not oldest.transport.is_closing():
                    oldest._close("evicted")
                    return True
            return False

        def _close(self, reason: str) -> None:
            self._disarm()
            waiting.pop(self, None)
            self.connections.discard(self)  # no longer counted against the limit while it closes
            if closed is not None:
                closed(reason)
            self.transport.close()

        # -- reading -------------------------------------------------------------------------------------

        def data_received(self, data: bytes) -> None:
            if self._in_head and self._head_bytes + len(data) > limits.max_head_bytes and not self._head_ends(data):
                self._refuse_head()
                return
            self._boundary = False
            super().data_received(data)
            if self.transport.is_closing() or self.transport.get_protocol() is not self:  # closed, or upgraded
                return
            if self._in_head:
                if not self._boundary:
                    self._head_bytes += len(data)
                    self._tail = (self._tail + data)[-3:]
                    if self._timer is None:
                        self._arm(limits.header_timeout, self._head_timed_out)
            elif self._timer is None:
                self._arm(limits.body_timeout, self._body_timed_out)

        def _head_ends(self, data: bytes) -> bool:
            """Whether the head ends in ``data`` within the limit (a large body may follow it in the same read)."""
            end = (self._tail + data).find(b"\r\n\r\n")
            return end >= 0 and self._head_bytes - len(self._tail) + end + 4 <= limits.max_head_bytes

        def on_headers_complete(self) -> None:
            self._boundary, self._in_head = True, False
            self._disarm()
            waiting.pop(self, None)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._boundary, self._in_head = True, True
            self._head_bytes, self._tail = 0, b""
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            busy = self.cycle is not None and not self.cycle.response_complete  # a pipelined request started
            if not busy and not self.transport.is_closing():
                waiting[self] = None
                waiting.move_to_end(self)

        # -- limits --------------------------------------------------------------------------------------

        def _arm(self, seconds: float, handler: Callable[[], None]) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, handler)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _refuse_head(self) -> None:
            if not self._busy():  # never in the middle of the answer to an earlier request
                self.transport.write(too_large)
            self._close("head_too_large")

        def _head_timed_out(self) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if self._head_bytes and not self._busy():  # a client that sent nothing is not answered
                self.transport.write(_HEAD_TIMEOUT)
            self._close("header_timeout")

        def _body_timed_out(self) -> None:
            self._timer = None
            cycle = self.cycle
            if self.transport.is_closing() or cycle is None:
                return
            if not cycle.response_started:
                self.transport.write(_BODY_TIMEOUT)
            scope: dict[str, Any] = cycle.scope  # type: ignore[assignment]
            scope[BODY_TIMED_OUT] = True
            cycle.disconnected = True  # the app's next receive() says the client is gone
            cycle.message_event.set()
            self._close("body_timeout")

    return BoundedHttpToolsProtocol


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (never past the hard limit, never
    down); the soft limit now in force."""

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def fit_to_open_files(limits: ConnectionLimits) -> ConnectionLimits:
    """``limits`` with the open-file limit raised for its connections, or fewer connections (said in the log)
    where the hard limit does not allow that many."""
    files = raise_open_files_limit(limits.max_connections + FILES_RESERVED)
    allowed = files - FILES_RESERVED
    if allowed >= limits.max_connections:
        return limits
    allowed = max(allowed, 16)
    log.warning("api_connections_lowered", max_connections=allowed, configured=limits.max_connections,
                open_files_limit=files, why="the hard limit on open files (ulimit -Hn) allows no more")
    return replace(limits, max_connections=allowed)


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (IPv4 or IPv6, as ``host`` resolves); ``OSError`` if
    the address is in use, not one of this machine's, or does not resolve."""
    family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: restarts need no wait
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve(app: Any, *, name: str, host: str, port: int, about: str = "", limits: ConnectionLimits | None = None,
          closed: Callable[[str], None] | None = None, **options: Any) -> int:
    """Bind, say ``dunlink <name> listening on http://host:port <about>``, then serve until interrupted.

    With ``limits``, each connection is bounded as the module's docstring says (``closed`` hears of each one
    the limits close). Returns the exit status: 1 (after one line on stderr) when the address cannot be bound.
    """

    if limits is not None:
        limits = fit_to_open_files(limits)
        options.update(http=bounded_protocol(limits, closed=closed), timeout_keep_alive=limits.keep_alive)
    try:
        sock = listen(host, port)
    except OSError as exc:
        print(f"dunlink {name}: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    print(f"dunlink {name} {LISTENING} http://{shown}:{port}{' ' + about if about else ''}", file=sys.stderr,
          flush=True)
    options.setdefault("server_header", False)  # no "server: uvicorn": nothing to tell a scanner what to try
    config = uvicorn.Config(app, log_level="warning", access_log=False, **options)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
