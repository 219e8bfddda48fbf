"""However a process is started, a bad setting or vendors file stops it at once with one line, never later.

Each command runs as an operator runs it, in its own process; none of them gets as far as serving or
consuming anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.vendors import vendors_toml

BIN = Path(sys.executable).parent
COMMANDS = {
    "dunlink api": [BIN / "dunlink", "api", "--port", "1"],
    "dunlink sandbox": [BIN / "dunlink", "sandbox", "--port", "1"],
    "dunlink worker": [BIN / "dunlink", "worker"],
    "dunlink beat": [BIN / "dunlink", "beat"],
    "dunlink due": [BIN / "dunlink", "due"],
    "dunlink db upgrade": [BIN / "dunlink", "db", "upgrade"],
    "dunlink cases list": [BIN / "dunlink", "cases", "list"],
    "celery -A workers worker": [BIN / "celery", "-A", "workers", "worker"],
    "celery -A workers beat": [BIN / "celery", "-A", "workers", "beat"],
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(vendors_toml({"acme": "test-ipn-secret-0a5e7c"}), encoding="utf-8")
    return {**{k: v for k, v in os.environ.items() if not k.startswith("DUNLINK_")},
            "DUNLINK_VENDORS_FILE": str(vendors), "DUNLINK_DATABASE_URL": f"sqlite:///{tmp_path / 'dunlink.db'}",
            "DUNLINK_BROKER_URL": "redis://127.0.0.1:6379/15"}


def start(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([str(part) for part in COMMANDS[command]], env=env, cwd=cwd, capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{command} started instead of refusing the setting:\n{exc.stdout!r}\n{exc.stderr!r}")


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(("variable", "value", "line"), [
    ("DUNLINK_BROKER_URL", "redis://127.0.0.1:6379/abc",
     "dunlink: DUNLINK_BROKER_URL: the path must be a Redis database number, e.g. redis://127.0.0.1:6379/0"),
    ("DUNLINK_MAIL_FROM", "a@b@c", "dunlink: DUNLINK_MAIL_FROM: must be a bare address such as dunning@example.com"),
])
def test_a_bad_setting_stops_every_process_in_one_line(command: str, variable: str, value: str, line: str,
                                                      env: dict[str, str], tmp_path: Path) -> None:
    result = start(command, {**env, variable: value}, tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [line]


@pytest.mark.parametrize("command", ["celery -A workers worker", "celery -A workers beat", "dunlink worker",
                                     "dunlink beat", "dunlink api"])
def test_a_bad_vendors_file_stops_workers_and_beat_however_started(command: str, env: dict[str, str],
                                                                   tmp_path: Path) -> None:
    unknown_key = vendors_toml({"acme": "test-ipn-secret-0a5e7c"}).replace("locale = ", 'colour = "red"\nlocale = ', 1)
    Path(env["DUNLINK_VENDORS_FILE"]).write_text(unknown_key, encoding="utf-8")

    result = start(command, env, tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"dunlink: {env['DUNLINK_VENDORS_FILE']}: vendor 'acme': colour: unknown key")
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_sandbox_token_for_a_platform_elsewhere_stops_every_process(command: str, env: dict[str, str],
                                                                       tmp_path: Path) -> None:
    """A process pointed at a real platform with the default token was not given the platform's token."""
    result = start(command, {**env, "DUNLINK_PLATFORM_URL": "https://api.platform.example"}, tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "dunlink: DUNLINK_PLATFORM_TOKEN: is the sandbox's token (sandbox-token, the default), accepted only for a "
        "sandbox on this machine: set the token of the platform at DUNLINK_PLATFORM_URL"]


@pytest.mark.parametrize("command", ["dunlink api", "dunlink sandbox", "dunlink worker", "dunlink beat",
                                     "celery -A workers worker"])
def test_a_placeholder_ipn_secret_stops_the_process_naming_the_vendor_not_the_secret(
        command: str, env: dict[str, str], tmp_path: Path) -> None:
    vendors = vendors_toml({"acme": "unused"}).replace('copecart_ipn_secret = "unused"',
                                                       'copecart_ipn_secret_env = "ACME_COPECART_IPN_SECRET"')
    Path(env["DUNLINK_VENDORS_FILE"]).write_text(vendors, encoding="utf-8")

    result = start(command, {**env, "ACME_COPECART_IPN_SECRET": "change-me"}, tmp_path)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"dunlink: {env['DUNLINK_VENDORS_FILE']}: vendor 'acme': copecart_ipn_secret_env: the secret in environment "
        "variable ACME_COPECART_IPN_SECRET is a placeholder, not a secret: set the real one")
    assert "change-me" not in result.stderr + result.stdout


def test_a_closed_pipe_ends_a_listing_quietly(env: dict[str, str], tmp_path: Path) -> None:
    """``dunlink cases list | head``: when the reader has gone, no traceback."""
    subprocess.run([str(BIN / "dunlink"), "db", "upgrade"], env=env, cwd=tmp_path, check=True, capture_output=True,
                   timeout=60)
    read, write = os.pipe()
    listing = subprocess.Popen([str(BIN / "dunlink"), "cases", "list"], env=env, cwd=tmp_path, stdout=write,
                               stderr=subprocess.PIPE, text=True)
    os.close(write)
    os.close(read)  # gone before the command has imported anything, let alone written
    _, errors = listing.communicate(timeout=60)

    assert errors == ""
    assert listing.returncode == 1
