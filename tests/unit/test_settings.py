"""Every ``DUNLINK_*`` value is checked when a process starts: a bad one is one line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from dunlink.config.logs import REDACTED, scrub_text
from dunlink.config.settings import SettingsError, load_settings, secrets_of, settings
from dunlink.config.vendors import VendorsFileError, load_vendors
from tests.support.vendors import vendors_toml

VARIABLES = ("DATABASE_URL", "BROKER_URL", "PLATFORM_URL", "PLATFORM_TOKEN", "SMTP_URL", "MAIL_FROM",
             "VENDORS_FILE", "PAYMENT_HOSTS", "PLATFORM_TIMEOUT", "LEASE_SECONDS", "VENDOR_SUMMARIES", "OPS_TOKEN",
             "API_MAX_CONNECTIONS", "API_HEADER_TIMEOUT", "API_BODY_TIMEOUT", "API_KEEP_ALIVE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(f"DUNLINK_{name}", raising=False)


def test_the_defaults_are_the_contracts(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()

    assert settings.database_url == "sqlite:///var/dunlink.db"
    assert settings.broker_url == "redis://127.0.0.1:6379/0"
    assert settings.platform_url == "http://127.0.0.1:8090"
    assert settings.platform_token == "sandbox-token"
    assert settings.smtp_url == "smtp://127.0.0.1:1025"
    assert settings.mail_from == "dunning@localhost"
    assert settings.vendors_file == Path("vendors.toml")
    assert settings.ops_token is None


@pytest.mark.parametrize(("variable", "value", "becomes"), [
    ("DATABASE_URL", "postgresql://dunlink@db.internal:5432/dunlink", "postgresql+psycopg://dunlink@db.internal:5432/dunlink"),
    ("DATABASE_URL", "postgresql+psycopg://u:p%40ss@127.0.0.1/dunlink", "postgresql+psycopg://u:p%40ss@127.0.0.1/dunlink"),
    ("DATABASE_URL", "sqlite:////srv/dunlink/dunlink.db", "sqlite:////srv/dunlink/dunlink.db"),
    ("BROKER_URL", "rediss://:secret@cache.internal:6380/2", "rediss://:secret@cache.internal:6380/2"),
    ("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:guest@127.0.0.1:5672//"),
    ("BROKER_URL", "filesystem:///tmp/dunlink-broker", "filesystem:///tmp/dunlink-broker"),
    ("PLATFORM_URL", "http://localhost:8090/", "http://localhost:8090"),
    ("SMTP_URL", "smtps://mailer:p%25ss@mail.example:465", "smtps://mailer:p%25ss@mail.example:465"),
    ("MAIL_FROM", "dunning@acme.example", "dunning@acme.example"),
])
def test_good_values_are_taken(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, becomes: str) -> None:
    monkeypatch.setenv(f"DUNLINK_{variable}", value)

    assert str(getattr(load_settings(), variable.lower())) == becomes


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("DATABASE_URL", "postgresql://postgres@127.0.0.1:notaport/dunlink", "must be a sqlite:/// or postgresql"),
    ("DATABASE_URL", "postgresql://u@h:70000/dunlink", "the port must be a number from 1 to 65535"),
    ("DATABASE_URL", "sqlitex:///a.db", "must be a sqlite:/// or postgresql+psycopg:// URL"),
    ("DATABASE_URL", "mysql://u@h/dunlink", "must be a sqlite:/// or postgresql+psycopg:// URL"),
    ("DATABASE_URL", "postgresql+asyncpg://u@h/dunlink", "PostgreSQL is reached through psycopg 3"),
    ("DATABASE_URL", "sqlite://", "must name a database file"),
    ("DATABASE_URL", "sqlite:///:memory:", "must name a database file"),
    ("DATABASE_URL", "postgresql://u@h:5432/", "must name the database"),
    ("BROKER_URL", "redis://127.0.0.1:notaport/0", "the port must be a number from 1 to 65535"),
    ("BROKER_URL", "bogus://x", "must be a redis://, rediss:// or amqp:// URL"),
    ("BROKER_URL", "http://x", "must be a redis://, rediss:// or amqp:// URL"),
    ("BROKER_URL", "127.0.0.1:6379", "must be a redis://, rediss:// or amqp:// URL"),
    ("BROKER_URL", "redis://127.0.0.1:6379/abc", "the path must be a Redis database number"),
    ("PLATFORM_URL", "http://h:notaport", "the port must be a number from 1 to 65535"),
    ("PLATFORM_URL", "http://h:99999", "the port must be a number from 1 to 65535"),
    ("PLATFORM_URL", "http://h:0", "the port must be a number from 1 to 65535"),
    ("PLATFORM_URL", "ftp://h", "must be an http:// or https:// URL with a host"),
    ("PLATFORM_TOKEN", "tok\nX-Evil: 1", "must be printable ASCII"),
    ("PLATFORM_TOKEN", " ", "must not be empty"),
    ("SMTP_URL", "smtp://h:0", "the port must be a number from 1 to 65535"),
    ("SMTP_URL", "smtp://h:abc", "the port must be a number from 1 to 65535"),
    ("SMTP_URL", "smtp://h:25/path", "nothing after it"),
    ("SMTP_URL", "smtps://u:%zz@h:465", "must be percent-encoded"),
    ("SMTP_URL", "smtp://u:p@h", "clear text"),
    ("MAIL_FROM", "a@b@c", "must be a bare address"),
    ("MAIL_FROM", "Dunning <dunning@acme.example>", "must be a bare address"),
    ("MAIL_FROM", "dunning", "must be a bare address"),
    ("VENDORS_FILE", "", "must name the vendors file"),
])
def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str,
                                                     says: str) -> None:
    monkeypatch.setenv(f"DUNLINK_{variable}", value)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    message = str(raised.value)
    assert message.startswith(f"DUNLINK_{variable}: ")
    assert says in message
    assert "\n" not in message


@pytest.mark.parametrize("secret_part", ["s3cret", "p%40ss"])
def test_a_password_is_never_repeated_in_the_message(monkeypatch: pytest.MonkeyPatch, secret_part: str) -> None:
    monkeypatch.setenv("DUNLINK_DATABASE_URL", f"postgresql://u:{secret_part}@h:notaport/dunlink")
    monkeypatch.setenv("DUNLINK_SMTP_URL", f"smtp://u:{secret_part}@h")

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert secret_part not in str(raised.value)


def test_a_vendors_file_that_is_a_folder_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(VendorsFileError) as raised:
        load_vendors(tmp_path)

    assert str(raised.value) == f"{tmp_path}: cannot read the vendors file: Is a directory (set DUNLINK_VENDORS_FILE)"


def test_a_secret_pasted_where_a_variable_name_belongs_is_not_repeated(tmp_path: Path) -> None:
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(vendors_toml({"acme": "unused"}).replace('copecart_ipn_secret = "unused"',
                                                                'copecart_ipn_secret_env = "Ipn-Secret-xyz"'))

    with pytest.raises(VendorsFileError) as raised:
        load_vendors(vendors, environ={})

    assert "Ipn-Secret-xyz" not in str(raised.value)
    assert "copecart_ipn_secret_env: must be the NAME of an environment variable" in str(raised.value)


def test_an_unset_variable_is_named(tmp_path: Path) -> None:
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(vendors_toml({"acme": "unused"}).replace('copecart_ipn_secret = "unused"',
                                                                'copecart_ipn_secret_env = "ACME_IPN_SECRET"'))

    with pytest.raises(VendorsFileError, match="environment variable ACME_IPN_SECRET is not set"):
        load_vendors(vendors, environ={})


def test_the_secrets_of_the_settings_are_the_tokens_and_every_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNLINK_PLATFORM_TOKEN", "Tok-1-platform-9b7e")
    monkeypatch.setenv("DUNLINK_OPS_TOKEN", "Tok-5-operations-4d2a")
    monkeypatch.setenv("DUNLINK_DATABASE_URL", "postgresql://u:Pg-2@db/dunlink")
    monkeypatch.setenv("DUNLINK_BROKER_URL", "redis://:Redis-3@cache:6379/0")
    monkeypatch.setenv("DUNLINK_SMTP_URL", "smtps://mailer:Smtp%2F4@mail.example:465")

    assert set(secrets_of(load_settings())) - {None} == {"Tok-1-platform-9b7e", "Tok-5-operations-4d2a", "Pg-2",
                                                         "Redis-3", "Smtp/4"}


def test_reading_the_settings_redacts_their_secrets_from_every_log_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNLINK_PLATFORM_TOKEN", "Tok-Wired-8842-platform")
    monkeypatch.setenv("DUNLINK_OPS_TOKEN", "Ops-Wired-3317-scrapes")
    settings.cache_clear()
    try:
        settings()
    finally:
        settings.cache_clear()

    assert scrub_text("the platform said: Tok-Wired-8842-platform is revoked") == \
        f"the platform said: {REDACTED} is revoked"
    assert scrub_text("scraped with Ops-Wired-3317-scrapes") == f"scraped with {REDACTED}"


def test_reading_the_vendors_file_redacts_the_ipn_secrets(tmp_path: Path) -> None:
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(vendors_toml({"acme": "Ipn-Wired-5531-acme"}))

    load_vendors(vendors, environ={})

    assert scrub_text("signed with Ipn-Wired-5531-acme") == f"signed with {REDACTED}"


# -- placeholders and weak secrets ----------------------------------------------------------------------------

PLACEHOLDER = "is a placeholder, not a secret: set the real one"
SHORT = "is too short: a secret must have at least 16 characters"
WEAK = [("change-me", PLACEHOLDER), ("changeme", PLACEHOLDER), ("CHANGE_ME", PLACEHOLDER), ("secret", PLACEHOLDER),
        ("sandbox-token", PLACEHOLDER), ("password", PLACEHOLDER), ("change-me-to-something-random", PLACEHOLDER),
        ("x" * 40, PLACEHOLDER), ("Hj3-kL9", SHORT), ("fifteen-chars-x", SHORT)]


def _not_repeated(value: str, message: str) -> None:
    if value != "secret":  # the one placeholder that is also a word of the message
        assert value not in message.replace("(sandbox-token, the default)", "")


@pytest.mark.parametrize(("value", "says"), WEAK)
def test_a_vendors_placeholder_or_short_ipn_secret_stops_start_up_naming_the_vendor(
        tmp_path: Path, value: str, says: str) -> None:
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(vendors_toml({"acme": value}))

    with pytest.raises(VendorsFileError) as raised:
        load_vendors(vendors, environ={})

    assert str(raised.value) == f"{vendors}: vendor 'acme': copecart_ipn_secret: the secret {says}"
    _not_repeated(value, str(raised.value))


def test_a_placeholder_ipn_secret_from_the_environment_names_the_variable_not_the_value(tmp_path: Path) -> None:
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(vendors_toml({"acme": "unused"}).replace('copecart_ipn_secret = "unused"',
                                                                'copecart_ipn_secret_env = "ACME_IPN_SECRET"'))

    with pytest.raises(VendorsFileError) as raised:
        load_vendors(vendors, environ={"ACME_IPN_SECRET": "change-me"})

    assert str(raised.value) == (f"{vendors}: vendor 'acme': copecart_ipn_secret_env: the secret in environment "
                                 "variable ACME_IPN_SECRET is a placeholder, not a secret: set the real one")
    assert load_vendors(vendors, environ={"ACME_IPN_SECRET": "a-real-secret-of-some-length"})


@pytest.mark.parametrize("variable", ["PLATFORM_TOKEN", "OPS_TOKEN"])
@pytest.mark.parametrize(("value", "says"), WEAK)
def test_a_placeholder_or_short_token_stops_start_up_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str) -> None:
    monkeypatch.setenv(f"DUNLINK_{variable}", value)
    if variable == "PLATFORM_TOKEN" and value == "sandbox-token":
        monkeypatch.setenv("DUNLINK_PLATFORM_URL", "https://api.platform.example")

    with pytest.raises(SettingsError) as raised:
        load_settings()

    message = str(raised.value)
    assert message.startswith(f"DUNLINK_{variable}: ")
    assert ("sandbox" if value == "sandbox-token" and variable == "PLATFORM_TOKEN" else says) in message
    _not_repeated(value, message)


def test_the_sandbox_token_is_the_default_only_for_a_sandbox_on_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for local in ("http://127.0.0.1:8090", "http://localhost:9000", "http://[::1]:8090", "http://127.0.0.2"):
        monkeypatch.setenv("DUNLINK_PLATFORM_URL", local)
        assert load_settings().platform_token == "sandbox-token"

    monkeypatch.setenv("DUNLINK_PLATFORM_URL", "https://api.platform.example")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert str(raised.value) == (
        "DUNLINK_PLATFORM_TOKEN: is the sandbox's token (sandbox-token, the default), accepted only for a sandbox "
        "on this machine: set the token of the platform at DUNLINK_PLATFORM_URL")

    monkeypatch.setenv("DUNLINK_PLATFORM_TOKEN", "a-real-platform-token-71c3")
    assert load_settings().platform_token == "a-real-platform-token-71c3"


def test_an_empty_ops_token_leaves_the_ops_endpoints_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNLINK_OPS_TOKEN", "")

    assert load_settings().ops_token is None


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("API_MAX_CONNECTIONS", "4", "must be between 16 and 1000000 connections"),
    ("API_HEADER_TIMEOUT", "0", "must be between 0.5 and 300 seconds"),
    ("API_BODY_TIMEOUT", "1000", "must be between 0.5 and 300 seconds"),
    ("API_KEEP_ALIVE", "0", "must be between 1 and 300 seconds"),
])
def test_the_apis_limits_are_checked(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str) -> None:
    monkeypatch.setenv(f"DUNLINK_{variable}", value)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert str(raised.value) == f"DUNLINK_{variable}: {says}"


def test_event_max_attempts_defaults_to_five_and_is_a_number_from_1_to_100(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUNLINK_EVENT_MAX_ATTEMPTS", raising=False)
    assert load_settings().event_max_attempts == 5
    monkeypatch.setenv("DUNLINK_EVENT_MAX_ATTEMPTS", "100")
    assert load_settings().event_max_attempts == 100
    for value in ("0", "101", "many"):
        monkeypatch.setenv("DUNLINK_EVENT_MAX_ATTEMPTS", value)
        with pytest.raises(SettingsError, match=r"^DUNLINK_EVENT_MAX_ATTEMPTS: ") as refused:
            load_settings()
        assert "\n" not in str(refused.value)
