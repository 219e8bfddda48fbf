"""``dunlink api`` and ``dunlink sandbox`` say they listen only once the port is theirs.

A port already in use is one clear line and exit status 1; whoever waits for the server (demo, soak, tests)
is never fooled by another program answering on the same port.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.db import fresh_sqlite
from tests.support.sandbox import free_port, write_vendors_file
from workers.processes import ProcessGroup, http_ready, serving

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
