"""What a soak runs on besides dunlink: a Redis of its own, a pass-through in front of the platform, a throwaway
database."""

from __future__ import annotations

import random
import select
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import psycopg
import redis
from sqlalchemy.engine import make_url

from adapters.db.migrate import upgrade
from dunlink.devtools.processes import free_port, stop_process
from dunlink.devtools.soak.model import ApiCall, SoakOptions

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


class PassThrough:
    """A pass-through in front of the sandbox's platform APIs, doing two things the sandbox cannot.

    It drops the answer to some writes after the platform acted on them (``rate`` of CopeCart's order API,
    ``ds24_rate`` of Digistore24's ``createBuyUrl`` and ``stopRebilling``), as a cut connection or a
    proxy timeout does in production: the case cannot know whether its order or link was made or its cancel or
    stop took effect. The sandbox's own faults always answer before any effect, so without this the soak never
    sees that half of the platform's failures. A drop starts a short blackout (``BLACKOUT_S``) in which every
    successful write of that platform loses its answer: the platform client's quick in-place retries would
    otherwise replay the call at once and hide the loss, which is exactly what a partition lasting a moment
    does not allow.

    It records every Digistore24 API call (``calls``) with the purchase or case it names and when it was
    answered: the sandbox's request log names neither, and the judge needs both. A call whose answer dunlink
    never read (dropped here, or dunlink gave up waiting: ``client_timeout``) is marked lost, since Digistore24
    has no idempotency keys and a link made for a lost answer may be made again.
    """

    BLACKOUT_S = 1.5

    def __init__(self, upstream: str, *, rate: float, ds24_rate: float = 0.0, seed: int,
                 client_timeout: float) -> None:
        self.upstream, self.rate, self.ds24_rate, self.client_timeout = upstream, rate, ds24_rate, client_timeout
        self.dropped: list[str] = []
        self.calls: list[ApiCall] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server: Any = None
        self._dark_until = {"copecart": 0.0, "digistore24": 0.0}

    def start(self) -> str:


        client = httpx.Client(base_url=self.upstream, timeout=httpx.Timeout(3.0, connect=3.0))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                call = proxy.begin(self.path, body)
                # Host passes through so the platform's payment_url names the address dunlink calls.
                headers = {k: v for k, v in self.headers.items() if k.lower() in (
                    "host", "authorization", "idempotency-key", "content-type", "accept", "x-ds-api-key")}
                try:
                    answer = client.request(self.command, self.path, content=body, headers=headers)
                except httpx.HTTPError:
                    if call is not None:
                        call.answered, call.result, call.lost = time.monotonic(), "no answer", True
                    self.close_connection = True  # the sandbox held it (a timeout fault): so does the proxy
                    return
                if call is not None:
                    proxy.answered(call, answer, gone=_client_gone(self.connection))
                if self.command == "POST" and answer.status_code < 300 and proxy.drop(call):
                    what = f"{call.function} {call.purchase_id or call.custom}" if call else self.path
                    proxy.dropped.append(f"{self.command} {what} {self.headers.get('Idempotency-Key')}")
                    if call is not None:
                        call.lost = True
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
        threading.Thread(target=server.serve_forever, name="pass-through", daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    def begin(self, path: str, body: bytes) -> ApiCall | None:
        """The record of a Digistore24 API call just arrived; None for anything else."""
        if not path.startswith("/api/call/"):
            return None
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        with self._lock:
            call = ApiCall(len(self.calls) + 1, path.removeprefix("/api/call/").partition("/")[0],
                           fields.get("purchase_id", ""), fields.get("tracking[custom]", ""), time.monotonic())
            self.calls.append(call)
        return call

    def answered(self, call: ApiCall, answer: httpx.Response, *, gone: bool) -> None:
        """Note what the platform answered, and whether dunlink is still there to read it. An answer slower than
        three quarters of dunlink's timeout counts as lost too: the rest is the time it takes to reach dunlink
        on a loaded machine, so it may well arrive too late."""
        call.answered = time.monotonic()
        call.lost = gone or call.answered - call.arrived >= 0.75 * self.client_timeout
        try:
            envelope = answer.json() if answer.status_code == 200 else None
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            call.result = str(answer.status_code)
            return
        call.result = str(envelope.get("result"))
        data = envelope.get("data") if call.result == "success" else None
        if isinstance(data, dict):
            call.link_id = str(data.get("id", "")) if call.function == "createBuyUrl" else ""
            call.modified = call.function == "stopRebilling" and data.get("modified") == "Y"

    def drop(self, call: ApiCall | None) -> bool:
        """Whether this write's answer is lost: a CopeCart call (``call`` None) or a Digistore24 write; reading a
        purchase again is no news."""
        if call is not None and call.function == "getPurchase":
            return False
        platform, rate = ("copecart", self.rate) if call is None else ("digistore24", self.ds24_rate)
        now = time.monotonic()
        with self._lock:
            if now < self._dark_until[platform]:
                return True
            if self._rng.random() < rate:
                self._dark_until[platform] = now + self.BLACKOUT_S
                return True
        return False

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _client_gone(connection: socket.socket) -> bool:
    """Whether the client hung up while the platform worked (it timed out): its socket reads as closed."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and not connection.recv(1, socket.MSG_PEEK)
    except OSError:
        return True


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
