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
from alembic.script import ScriptDirectory

from adapters.db.migrate import alembic_config, upgrade
from dunlink.devtools.processes import ProcessGroup, log_ready
from tests.support.db import fresh_postgres
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


@pytest.mark.parametrize("command", ["dunlink api", "dunlink worker", "dunlink sandbox", "celery -A workers worker"])
def test_a_missing_vendors_file_says_how_to_make_one(command: str, env: dict[str, str], tmp_path: Path) -> None:
    env = {key: value for key, value in env.items() if key != "DUNLINK_VENDORS_FILE"}  # the default, vendors.toml
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = start(command, env, elsewhere)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "dunlink: vendors.toml: vendors file not found: start from the example with 'cp vendors.example.toml "
        "vendors.toml', or set DUNLINK_VENDORS_FILE to your vendors file"]


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


# -- the database and the broker at start-up ------------------------------------------------------------------

UNREACHABLE_DATABASE = "postgresql://dunlink:S3cret-pw@127.0.0.1:1/dunlink"
REFUSED = ('dunlink: the database at postgresql+psycopg://dunlink:***@127.0.0.1:1/dunlink cannot answer: '
           'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused')


@pytest.mark.parametrize("command", ["dunlink db upgrade", "dunlink api", "dunlink due", "dunlink cases list",
                                     "dunlink worker", "celery -A workers worker"])
def test_an_unreachable_database_is_one_line_naming_it_without_its_password(command: str, env: dict[str, str],
                                                                           tmp_path: Path) -> None:
    result = start(command, {**env, "DUNLINK_DATABASE_URL": UNREACHABLE_DATABASE}, tmp_path)

    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(REFUSED), line
    assert "DUNLINK_DATABASE_URL" in line
    assert "S3cret-pw" not in result.stdout + result.stderr


SERVING = ["dunlink api", "dunlink due", "dunlink worker", "celery -A workers worker"]


@pytest.mark.parametrize("command", SERVING)
def test_a_missing_sqlite_database_is_refused_naming_db_upgrade_and_not_created(command: str, env: dict[str, str],
                                                                                tmp_path: Path) -> None:
    missing = tmp_path / "var" / "dunlink.db"
    result = start(command, {**env, "DUNLINK_DATABASE_URL": "sqlite:///var/dunlink.db"}, tmp_path)

    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"dunlink: no database at {missing}: run 'dunlink db upgrade' to create it, or set DUNLINK_DATABASE_URL "
        "to the database dunlink uses"]
    assert not missing.parent.exists()


@pytest.mark.parametrize("command", SERVING)
def test_a_database_without_the_schema_is_refused_naming_db_upgrade(command: str, env: dict[str, str],
                                                                    tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    with fresh_postgres() as empty:
        results = [start(command, {**env, "DUNLINK_DATABASE_URL": url}, tmp_path)
                   for url in (f"sqlite:///{tmp_path / 'empty.db'}", empty)]

    for result in results:
        assert result.returncode == 1, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert line.endswith(" has no dunlink schema: run 'dunlink db upgrade' first"), line


def test_a_database_behind_this_release_is_refused_naming_db_upgrade(env: dict[str, str], tmp_path: Path) -> None:
    url = env["DUNLINK_DATABASE_URL"]
    revisions = ScriptDirectory.from_config(alembic_config(url))
    head = revisions.get_current_head()
    assert head is not None
    previous = revisions.get_revision(head).down_revision
    assert isinstance(previous, str)
    upgrade(url, previous)

    result = start("dunlink api", env, tmp_path)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"dunlink: the database at {url} is at revision {previous}, this dunlink needs {head}: "
        "run 'dunlink db upgrade' first"]


def test_a_worker_names_the_broker_setting_once_when_the_broker_does_not_answer(env: dict[str, str],
                                                                               tmp_path: Path) -> None:
    upgrade(env["DUNLINK_DATABASE_URL"])
    env = {**env, "DUNLINK_BROKER_URL": "redis://:S3cret-pw@127.0.0.1:1/0"}
    with ProcessGroup(env=env, log_dir=tmp_path / "logs", cwd=tmp_path) as group:
        worker = group.start("worker", ["worker", "-c", "1"], ready=log_ready("Trying again in 4.00 seconds"),
                             timeout=60)
        log = worker.log_text()

    named = [line for line in log.splitlines() if "DUNLINK_BROKER_URL" in line]
    assert named == ["dunlink: cannot reach the broker at redis://:***@127.0.0.1:1/0 (DUNLINK_BROKER_URL): Error 111 "
                     "connecting to 127.0.0.1:1. Connection refused; retrying until it does"]
    assert "S3cret-pw" not in log
