"""What a soak runs on besides dunlink: a Redis of its own, a lossy proxy, a throwaway database."""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from sqlalchemy.engine import make_url

from adapters.db.migrate import upgrade
from dunlink.devtools.processes import free_port, stop_process
from dunlink.devtools.soak.model import SoakOptions

# -- what the soak runs on -------------------------------------------------------------------------------------


class OwnRedis:
    """A ``redis-server`` child on a free port without persistence, so a restart loses every queued message:
    the machine's own Redis is never touched, and the relay has to prove it finds the lost work."""

    def __init__(self, folder: Path) -> None:

        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH; the soak runs a Redis of its own")
        with (self.folder / "redis.log").open("ab") as log:
            self._popen = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(self.folder)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with suppress(redis.RedisError), redis.Redis(port=self.port, socket_timeout=1) as client:
                if client.ping():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not answer within 10s")

    def stop(self) -> None:

        if self._popen is None:
            return
        stop_process(self._popen, grace=5)
        self._popen = None


class LostAnswers:
    """A pass-through in front of the sandbox's ``/v1`` API that drops the answer to some writes after the
    platform acted on them, as a cut connection or a proxy timeout does in production: the case cannot
    know whether its order was made or its cancel took effect. The sandbox's own faults always answer
    before any effect, so without this the soak never sees that half of the platform's failures.

    A drop starts a short blackout (``BLACKOUT_S``) in which every successful write loses its answer: the
    platform client's quick in-place retries would otherwise replay the key at once and hide the loss,
    which is exactly what a partition lasting a moment does not allow."""

    BLACKOUT_S = 1.5

    def __init__(self, upstream: str, *, rate: float, seed: int) -> None:
        self.upstream, self.rate = upstream, rate
        self.dropped: list[str] = []
        self._rng = random.Random(seed)
        self._server: Any = None
        self._dark_until = 0.0

    def start(self) -> str:


        client = httpx.Client(base_url=self.upstream, timeout=httpx.Timeout(3.0, connect=3.0))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                # Host passes through so the platform's payment_url names the address dunlink calls.
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("host", "authorization", "idempotency-key", "content-type", "accept")}
                try:
                    answer = client.request(self.command, self.path, content=body, headers=headers)
                except httpx.HTTPError:
                    self.close_connection = True  # the sandbox held it (a timeout fault): so does the proxy
                    return
                if self.command == "POST" and answer.status_code < 300 and proxy.drop():
                    proxy.dropped.append(f"{self.command} {self.path} {self.headers.get('Idempotency-Key')}")
                    self.close_connection = True
                    return
                self.send_response(answer.status_code)
                for key in ("Content-Type", "Retry-After"):
                    if key in answer.headers:
                        self.send_header(key, answer.headers[key])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = _forward

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up after its timeout is the expected case here, not news

        server = Server(("127.0.0.1", 0), Handler)
        self._server = server
        threading.Thread(target=server.serve_forever, name="lost-answers", daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    def drop(self) -> bool:
        now = time.monotonic()
        if now < self._dark_until:
            return True
        if self._rng.random() < self.rate:
            self._dark_until = now + self.BLACKOUT_S
            return True
        return False

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@contextmanager
def throwaway_database(options: SoakOptions) -> Iterator[str]:
    """The given database, or a new PostgreSQL database on the local server, dropped afterwards."""

    if options.database_url:
        upgrade(options.database_url)
        yield options.database_url
        return

    admin = make_url(options.postgres)
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"dunlink_soak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
