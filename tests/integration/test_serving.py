"""``dunlink api`` and ``dunlink sandbox`` say they listen only once the port is theirs, and no client can
hold ``dunlink api``.

A port already in use is one clear line and exit status 1; whoever waits for the server (demo, soak, tests)
is never fooled by another program answering on the same port. Each client of the api is bounded: the size
and time of its request head, the time of its body, its idle keep-alive, and the number of connections,
where the oldest waiting connection makes room for a new one (README, Security).
"""

from __future__ import annotations

import http.server
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from adapters.db.migrate import upgrade
from dunlink.devtools.processes import Process, ProcessGroup, api_command, free_port, http_ready, serving
from platforms.copecart.webhook import SIGNATURE_HEADER, signature
from tests.support.db import fresh_sqlite
from tests.support.sandbox import write_vendors_file
from tests.support.stack import SECRET, eventually

DUNLINK = str(Path(sys.executable).parent / "dunlink")


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"status": "ok"}')

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port held by another program that answers every GET with 200."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "DUNLINK_VENDORS_FILE": str(write_vendors_file(tmp_path)),
            "DUNLINK_DATABASE_URL": fresh_sqlite(tmp_path)}  # the api starts only on a migrated database


@pytest.mark.parametrize("command", ["api", "sandbox"])
def test_a_port_in_use_is_one_line_and_status_1(command: str, taken_port: int, env: dict[str, str]) -> None:
    result = subprocess.run([DUNLINK, command, "--port", str(taken_port)], env=env, capture_output=True,
                            text=True, timeout=60)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"dunlink {command}: cannot listen on 127.0.0.1:{taken_port}: Address already in use"]
    assert "listening" not in result.stdout + result.stderr


def test_waiting_for_a_server_is_not_fooled_by_another_on_its_port(taken_port: int, env: dict[str, str],
                                                                  tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{taken_port}/healthz"
    assert http_ready(url)(None)  # type: ignore[arg-type]  # an answer alone would pass for the api's

    with ProcessGroup(env=env, log_dir=tmp_path / "logs") as group, \
            pytest.raises(RuntimeError, match="api exited with 1") as raised:
        group.start("api", ["api", "--port", str(taken_port)], ready=serving(url), timeout=60)

    assert "Address already in use" in str(raised.value)


def test_a_restarted_server_is_judged_on_its_own_lines(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/sandbox/requests"
    with ProcessGroup(env=env, log_dir=tmp_path / "logs") as group:
        group.start("sandbox", ["sandbox", "--port", str(port)], ready=serving(url))
        group.stop("sandbox")
        again = group.start("sandbox", ["sandbox", "--port", str(port)], ready=serving(url))

        assert again.log_text().count("dunlink sandbox listening on") == 1
        assert again.log_path.read_text().count("dunlink sandbox listening on") == 2


# -- what one client may hold of dunlink api ------------------------------------------------------------------

FIXTURE = Path(__file__).parents[1] / "fixtures" / "copecart" / "payment_failed_breakdown.json"
LIMIT_S = 1.0  # the header, body and keep-alive limits the api runs with here
HEAD = b"POST /webhooks/copecart/acme HTTP/1.1\r\nHost: dunlink.test\r\nContent-Type: application/json\r\n"


@dataclass
class Api:
    url: str
    port: int
    process: Process

    def connect(self) -> socket.socket:
        client = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return client

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.popen.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.process.log_text().splitlines() if line.startswith("{")]


def _api_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    database = f"sqlite:///{tmp_path / 'dunlink.db'}"
    upgrade(database)
    return {**{k: v for k, v in os.environ.items() if not k.startswith("DUNLINK_")},
            "DUNLINK_VENDORS_FILE": str(write_vendors_file(tmp_path)), "DUNLINK_DATABASE_URL": database,
            "DUNLINK_BROKER_URL": f"filesystem://{tmp_path / 'broker'}",
            **{f"DUNLINK_{name.upper()}": value for name, value in settings.items()}}


@contextmanager
def running_api(tmp_path: Path, **settings: str) -> Iterator[Api]:
    """A real ``dunlink api`` with the given ``DUNLINK_*`` settings (by lower-case name), on SQLite."""
    env = _api_env(tmp_path, **{"api_header_timeout": str(LIMIT_S), "api_body_timeout": str(LIMIT_S),
                                "api_keep_alive": str(int(LIMIT_S)), **settings})
    port = free_port()
    command = api_command(port)
    with ProcessGroup(env=env, log_dir=tmp_path / "logs", cwd=tmp_path) as group:
        process = group.start("api", command.args, ready=command.ready, timeout=60)
        yield Api(f"http://127.0.0.1:{port}", port, process)


def until_closed(client: socket.socket, *, trickle: bytes = b"", within: float = 8.0) -> tuple[bytes, float]:
    """Send ``trickle`` a byte every 0.1 s (nothing if empty) until the server closes; what it answered, and
    after how many seconds it closed."""
    started = time.monotonic()
    answer = b""
    client.setblocking(False)
    sent = 0
    while time.monotonic() - started < within:
        try:
            chunk = client.recv(65536)
            if not chunk:
                return answer, time.monotonic() - started
            answer += chunk
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return answer, time.monotonic() - started
        if trickle:
            try:
                client.send(trickle[sent % len(trickle):][:1])
                sent += 1
            except (BrokenPipeError, ConnectionResetError):
                pass
        time.sleep(0.1)
    raise AssertionError(f"still open after {within}s; answered {answer!r}")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(tmp_path_factory.mktemp("bounded")) as running:
        yield running


def test_a_client_sending_its_head_slowly_is_answered_408_and_closed_after_the_limit(api: Api) -> None:
    with api.connect() as client:
        client.sendall(HEAD)
        answer, after = until_closed(client, trickle=b"X-Slow: a")

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert LIMIT_S - 0.1 <= after < LIMIT_S + 2


def test_a_connection_that_sends_nothing_is_closed_after_the_header_limit(api: Api) -> None:
    with api.connect() as client:
        answer, after = until_closed(client)

    assert answer == b""
    assert LIMIT_S - 0.1 <= after < LIMIT_S + 2


def test_a_client_sending_its_body_slowly_is_answered_408_closed_and_logged_once(api: Api) -> None:
    with api.connect() as client:
        client.sendall(HEAD + b"Content-Length: 2000\r\nX-Copecart-Signature: x\r\n\r\n{")
        answer, after = until_closed(client, trickle=b"a")

    assert answer.startswith(b"HTTP/1.1 408 ")
    assert LIMIT_S - 0.1 <= after < LIMIT_S + 2
    line = eventually(lambda: [line for line in api.log_lines() if line["event"] == "webhook_body_incomplete"
                               and line["why"] == "the body took longer than the time limit"], timeout=5,
                      what="the api's line about the body")
    assert [entry["level"] for entry in line] == ["info"]


def test_an_idle_keep_alive_connection_is_closed_after_the_limit(api: Api) -> None:
    with api.connect() as client:
        client.sendall(b"GET /healthz HTTP/1.1\r\nHost: dunlink.test\r\n\r\n")
        answer = b""
        while b'"status"' not in answer:
            answer += client.recv(4096)
        rest, after = until_closed(client)

    assert answer.startswith(b"HTTP/1.1 200 ")
    assert rest == b""
    assert after < LIMIT_S + 2


def test_an_oversize_head_is_refused_and_memory_does_not_grow_with_it(api: Api) -> None:
    """50 clients each sending a header of 4 MiB that never ends: each is refused after 16 KiB, and the api's
    memory does not take in what they send."""
    before = api.rss_kib()
    answers = []
    with ExitStack() as open_connections:
        clients = [open_connections.enter_context(api.connect()) for _ in range(50)]
        for client in clients:
            client.settimeout(1)
            try:
                client.sendall(HEAD + b"X-Big: ")
                for _ in range(64):
                    client.sendall(b"a" * 65536)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass
        during = api.rss_kib()
        for client in clients:
            try:
                answers.append(client.recv(4096))
            except ConnectionResetError:
                answers.append(b"reset")
            except TimeoutError:
                answers.append(b"no answer")

    assert during - before < 20 * 1024, f"{before} KiB before, {during} KiB with 50 oversize heads open"
    assert all(answer.startswith(b"HTTP/1.1 431 ") or answer in (b"", b"reset") for answer in answers), answers[:3]
    assert any(answer.startswith(b"HTTP/1.1 431 ") for answer in answers)
    assert httpx.get(f"{api.url}/healthz", timeout=10).status_code == 200


def test_a_client_hanging_up_mid_body_is_one_info_line_never_a_traceback(api: Api) -> None:
    with api.connect() as client:
        client.sendall(HEAD + b"Content-Length: 2000\r\nX-Copecart-Signature: x\r\n\r\n{\"event_type\": ")
        time.sleep(0.2)

    lines = eventually(lambda: [line for line in api.log_lines() if line["event"] == "webhook_body_incomplete"
                                and line["why"] == "the client hung up"], timeout=5, what="the api's line")
    assert lines == [{**lines[0], "level": "info", "vendor": "acme", "received_bytes": 15}]
    log = api.process.log_text()
    assert "Traceback" not in log
    assert not [line for line in api.log_lines() if line["level"] in ("error", "critical")]


def test_no_redirect_is_built_from_the_host_header_and_no_server_is_named(api: Api) -> None:
    body = FIXTURE.read_bytes()
    slashed = httpx.post(f"{api.url}/webhooks/copecart/acme/", content=body, timeout=10,
                         headers={"Host": "evil.example", SIGNATURE_HEADER: signature(SECRET, body)})

    assert slashed.status_code == 404
    assert "location" not in slashed.headers
    assert "server" not in httpx.get(f"{api.url}/healthz", timeout=10).headers


def test_at_the_connection_limit_the_oldest_waiting_connections_make_room_for_an_ipn(tmp_path: Path) -> None:
    with running_api(tmp_path, api_max_connections="16", api_header_timeout="60") as api, ExitStack() as held:
        idle = [held.enter_context(api.connect()) for _ in range(40)]
        body = FIXTURE.read_bytes()
        started = time.monotonic()
        answer = httpx.post(f"{api.url}/webhooks/copecart/acme", content=body, timeout=10,
                            headers={SIGNATURE_HEADER: signature(SECRET, body)})
        took = time.monotonic() - started
        closed = 0
        for client in idle:
            client.settimeout(0.05)
            try:
                closed += client.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1

    assert (answer.status_code, answer.text) == (200, "OK")
    assert took < 1
    assert closed >= 40 - 16 + 1, f"only {closed} of 40 idle connections closed with room for 16"


def test_the_open_file_limit_is_raised_for_the_connections(tmp_path: Path) -> None:
    env = _api_env(tmp_path, api_max_connections="3000")
    port = free_port()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3000 + 256:
        pytest.fail(f"this machine's hard limit on open files ({hard}) is below what the test needs")

    def low_soft_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    api = subprocess.Popen([DUNLINK, "api", "--port", str(port)], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, preexec_fn=low_soft_limit)
    try:
        eventually(lambda: http_ready(f"http://127.0.0.1:{port}/healthz")(None),  # type: ignore[arg-type]
                   timeout=60, what="the api to answer")
        limits = Path(f"/proc/{api.pid}/limits").read_text()
    finally:
        api.terminate()
        api.wait(timeout=30)

    [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
    assert int(line.split()[3]) >= 3000 + 256
