"""Every ``DUNLINK_*`` value is checked when a process starts: a bad one is one line naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.vendors import vendors_toml
from workers.logs import REDACTED, scrub_text
from workers.settings import SettingsError, load_settings, secrets_of, settings
from workers.vendors import VendorsFileError, load_vendors

VARIABLES = ("DATABASE_URL", "BROKER_URL", "PLATFORM_URL", "PLATFORM_TOKEN", "SMTP_URL", "MAIL_FROM",
             "VENDORS_FILE", "PAYMENT_HOSTS", "PLATFORM_TIMEOUT", "LEASE_SECONDS", "VENDOR_SUMMARIES")


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


@pytest.mark.parametrize(("variable", "value", "becomes"), [
    ("DATABASE_URL", "postgresql://dunlink@db.internal:5432/dunlink", "postgresql+psycopg://dunlink@db.internal:5432/dunlink"),
    ("DATABASE_URL", "postgresql+psycopg://u:p%40ss@127.0.0.1/dunlink", "postgresql+psycopg://u:p%40ss@127.0.0.1/dunlink"),
    ("DATABASE_URL", "sqlite:////srv/dunlink/dunlink.db", "sqlite:////srv/dunlink/dunlink.db"),
    ("BROKER_URL", "rediss://:secret@cache.internal:6380/2", "rediss://:secret@cache.internal:6380/2"),
    ("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//", "amqp://guest:guest@127.0.0.1:5672//"),
    ("BROKER_URL", "filesystem:///tmp/dunlink-broker", "filesystem:///tmp/dunlink-broker"),
    ("PLATFORM_URL", "https://api.copecart.example/", "https://api.copecart.example"),
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


def test_the_secrets_of_the_settings_are_the_token_and_every_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNLINK_PLATFORM_TOKEN", "Tok-1")
    monkeypatch.setenv("DUNLINK_DATABASE_URL", "postgresql://u:Pg-2@db/dunlink")
    monkeypatch.setenv("DUNLINK_BROKER_URL", "redis://:Redis-3@cache:6379/0")
    monkeypatch.setenv("DUNLINK_SMTP_URL", "smtps://mailer:Smtp%2F4@mail.example:465")

    assert set(secrets_of(load_settings())) - {None} == {"Tok-1", "Pg-2", "Redis-3", "Smtp/4"}


def test_reading_the_settings_redacts_their_secrets_from_every_log_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUNLINK_PLATFORM_TOKEN", "Tok-Wired-8842")
    settings.cache_clear()
    try:
        settings()
    finally:
        settings.cache_clear()

    assert scrub_text("the platform said: Tok-Wired-8842 is revoked") == f"the platform said: {REDACTED} is revoked"


def test_reading_the_vendors_file_redacts_the_ipn_secrets(tmp_path: Path) -> None:
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(vendors_toml({"acme": "Ipn-Wired-5531"}))

    load_vendors(vendors, environ={})

    assert scrub_text("signed with Ipn-Wired-5531") == f"signed with {REDACTED}"


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
