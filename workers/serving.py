"""Serving an HTTP app (the webhook app, the sandbox) on a socket that is bound before anything is said.

The socket is bound and listening before the process prints that it listens, so the line is true when it
appears, and a port already in use is one clear line and exit status 1 instead of a banner followed by
uvicorn's bind error. Whoever waits for the process (the demo, the soak, the tests) can trust the line: no
other program answers on a port this process said it listens on.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

LISTENING = "listening on"


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


def serve(app: Any, *, name: str, host: str, port: int, about: str = "", **options: Any) -> int:
    """Bind, say ``dunlink <name> listening on http://host:port <about>``, then serve until interrupted.

    Returns the exit status: 1 (after one line on stderr) when the address cannot be bound.
    """
    import uvicorn

    try:
        sock = listen(host, port)
    except OSError as exc:
        print(f"dunlink {name}: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address in a URL
    print(f"dunlink {name} {LISTENING} http://{shown}:{port}{' ' + about if about else ''}", file=sys.stderr,
          flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, **options)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
