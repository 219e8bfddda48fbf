"""Process settings from ``DUNLINK_*`` environment variables (12-factor).

Every value is checked when a process starts; a bad one stops it with one line that names the variable
and what is wrong, so nothing fails hours later in the middle of a payment.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from adapters.email.smtp import SmtpSender
from dunlink.config.logs import redact_secrets
from dunlink.config.vendors import Vendor, is_email_address, load_vendors, weak_secret
from platforms.digistore24.api import DEFAULT_URL as DIGISTORE24_URL
from platforms.digistore24.links import CHECKOUT_HOSTS as DIGISTORE24_CHECKOUT_HOSTS

_PORT = "the port must be a number from 1 to 65535"
# Brokers dunlink is run on: Redis (production), RabbitMQ, and the demo's embedded filesystem broker.
_BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "filesystem")


def _port(parts: SplitResult) -> None:
    try:
        port = parts.port
    except ValueError:
        raise ValueError(_PORT) from None
    if port == 0:
        raise ValueError(_PORT)


# The sandbox's bearer token: the default, and accepted only where the platform is a sandbox on this machine.
SANDBOX_TOKEN = "sandbox-token"  # noqa: S105 - the sandbox's well-known token, refused for any real platform


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1): this machine, never a remote platform."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _printable_token(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if not value.isascii() or not value.isprintable() or value != value.strip():
        raise ValueError("must be printable ASCII, without line breaks or surrounding spaces")
    return value


# The vendor page's tokens are signed with DUNLINK_SECRET_KEY: anyone who has it can open and act on any case.
SHORTEST_SECRET_KEY = 32


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DUNLINK_", extra="ignore", frozen=True)

    database_url: str = "sqlite:///var/dunlink.db"
    broker_url: str = "redis://127.0.0.1:6379/0"
    platform_url: str = "http://127.0.0.1:8090"
    # Digistore24's API, for vendors with platform = "digistore24" (the sandbox's for rehearsals and tests).
    digistore24_url: str = DIGISTORE24_URL
    platform_token: str = Field(default=SANDBOX_TOKEN, repr=False)
    ops_token: str | None = Field(default=None, repr=False)
    # Where people reach `dunlink api` (links in vendor emails), and the key that signs vendor page tokens.
    public_url: str = "http://127.0.0.1:8000"
    secret_key: str | None = Field(default=None, repr=False)
    smtp_url: str = Field(default="smtp://127.0.0.1:1025", repr=False)
    mail_from: str = "dunning@localhost"
    vendors_file: Path = Path("vendors.toml")
    payment_hosts: str = ""
    platform_timeout: float = 5.0
    lease_seconds: int = 60
    vendor_summaries: bool = True
    event_max_attempts: int = 5
    # What one client may hold of ``dunlink api`` (dunlink/webapp/serving.py): see the README's Security section.
    api_max_connections: int = 2048
    api_header_timeout: float = 10.0
    api_body_timeout: float = 10.0
    api_keep_alive: int = 5

    @field_validator("api_max_connections")
    @classmethod
    def _max_connections(cls, value: int) -> int:
        if not 16 <= value <= 1_000_000:
            raise ValueError("must be between 16 and 1000000 connections")
        return value

    @field_validator("api_header_timeout", "api_body_timeout")
    @classmethod
    def _read_timeout(cls, value: float) -> float:
        if not 0.5 <= value <= 300:
            raise ValueError("must be between 0.5 and 300 seconds")
        return value

    @field_validator("api_keep_alive")
    @classmethod
    def _keep_alive(cls, value: int) -> int:
        if not 1 <= value <= 300:
            raise ValueError("must be between 1 and 300 seconds")
        return value

    @field_validator("platform_timeout")
    @classmethod
    def _timeout(cls, value: float) -> float:
        if not 0.1 <= value <= 120:
            raise ValueError("must be between 0.1 and 120 seconds")
        return value

    @field_validator("lease_seconds")
    @classmethod
    def _lease(cls, value: int) -> int:
        if not 2 <= value <= 3600:
            raise ValueError("must be between 2 and 3600 seconds")
        return value

    @field_validator("event_max_attempts")
    @classmethod
    def _event_attempts(cls, value: int) -> int:
        if not 1 <= value <= 100:
            raise ValueError("must be a number of attempts from 1 to 100")
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:

        try:
            url = make_url(value)
        except (ArgumentError, ValueError):  # the URL itself is not echoed: it may hold a password
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL "
                             "(user, password, host, a port from 1 to 65535, database)") from None
        if url.drivername in ("postgresql", "postgres"):
            # The contract names psycopg 3 as the PostgreSQL driver; plain URLs mean it.
            url = url.set(drivername="postgresql+psycopg")
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        if url.drivername.startswith("postgresql+") and url.drivername != "postgresql+psycopg":
            raise ValueError("PostgreSQL is reached through psycopg 3: use postgresql+psycopg://")
        if url.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        if url.port is not None and not 1 <= url.port <= 65535:
            raise ValueError(_PORT)
        if url.get_backend_name() == "sqlite" and (url.database in (None, "", ":memory:")
                                                   or url.query.get("mode") == "memory"):
            raise ValueError("must name a database file, e.g. sqlite:///var/dunlink.db: an in-memory "
                             "database is not shared between processes and is lost when they end")
        if url.get_backend_name() == "postgresql" and not url.database:
            raise ValueError("must name the database, e.g. postgresql+psycopg://user@host:5432/dunlink")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        parts = urlsplit(value)
        if "://" not in value or parts.scheme not in _BROKER_SCHEMES:
            raise ValueError("must be a redis://, rediss:// or amqp:// URL such as redis://127.0.0.1:6379/0 "
                             "(or filesystem:///folder for the embedded broker)")
        _port(parts)
        if parts.scheme in ("redis", "rediss"):
            if not parts.hostname:
                raise ValueError("must name a host, e.g. redis://127.0.0.1:6379/0")
            number = parts.path.strip("/")
            if number and not number.isdigit():
                raise ValueError("the path must be a Redis database number, e.g. redis://127.0.0.1:6379/0")
        return value

    @field_validator("platform_url", "digistore24_url")
    @classmethod
    def _platform(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        _port(parts)
        if parts.query or parts.fragment:
            raise ValueError("must be a base URL without ?query or #fragment")
        return value.rstrip("/")

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
            raise ValueError("must be the http:// or https:// base URL at which people reach dunlink api, "
                             "e.g. https://dunning.example.com")
        _port(parts)
        if parts.query or parts.fragment or not value.isprintable() or " " in value:
            raise ValueError("must be a base URL without ?query, #fragment or spaces")
        return value.rstrip("/")

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None  # checked against the vendors file: required once a vendor makes links by hand
        _printable_token(value)
        if weak_secret(value) or len(value) < SHORTEST_SECRET_KEY:
            raise ValueError(f"must be a random secret of at least {SHORTEST_SECRET_KEY} characters "
                             "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')")
        return value

    @field_validator("vendors_file")
    @classmethod
    def _vendors_file(cls, value: Path) -> Path:
        if str(value) in ("", "."):
            raise ValueError("must name the vendors file, e.g. vendors.toml")
        return value

    @field_validator("payment_hosts")
    @classmethod
    def _payment_hosts(cls, value: str) -> str:
        hosts = [host.strip().lower() for host in value.split(",") if host.strip()]
        if any("/" in host or ":" in host or " " in host for host in hosts):
            raise ValueError("must be host names separated by commas, e.g. pay.example.com,example.com")
        return ",".join(hosts)

    @property
    def allowed_payment_hosts(self) -> frozenset[str]:
        """Hosts a payment link in a buyer's email may point at: the platforms' own (Digistore24's checkout is
        on a domain of its own), plus those configured."""
        platforms = {urlsplit(url).hostname or "" for url in (self.platform_url, self.digistore24_url)}
        return frozenset({*(host.lower() for host in platforms), *DIGISTORE24_CHECKOUT_HOSTS,
                          *filter(None, self.payment_hosts.split(","))})

    @field_validator("platform_token")
    @classmethod
    def _token(cls, value: str, info: ValidationInfo) -> str:
        _printable_token(value)
        if value == SANDBOX_TOKEN:
            # The demo, the tests and a developer's sandbox run on this machine; a real platform never does,
            # so a process pointed at one with the default token was not given the platform's token.
            platform = info.data.get("platform_url")
            if platform is not None and not is_loopback(urlsplit(platform).hostname or ""):
                raise ValueError(f"is the sandbox's token ({SANDBOX_TOKEN}, the default), accepted only for a "
                                 "sandbox on this machine: set the token of the platform at DUNLINK_PLATFORM_URL")
            return value
        problem = weak_secret(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("ops_token")
    @classmethod
    def _ops_token(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None  # unset: /metrics is off and /healthz says only ok or down
        _printable_token(value)
        problem = weak_secret(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp(cls, value: str) -> str:

        try:
            SmtpSender.from_url(value)  # the sender's own checks, at start-up rather than at the first email
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("DUNLINK_SMTP_URL: ")) from None
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        if not is_email_address(value):
            raise ValueError("must be a bare address such as dunning@example.com")
        return value


def load_settings() -> Settings:
    """Read and check the environment once; raise :class:`SettingsError` with a one-line message."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"DUNLINK_{field.upper()}: {message}") from None


def secrets_of(config: Settings) -> list[str | None]:
    """The values in these settings that must never reach a log: the tokens and every password in a URL."""


    passwords = [urlsplit(url).password for url in (config.smtp_url, config.broker_url, config.platform_url)]
    return [config.platform_token, config.ops_token, config.secret_key, make_url(config.database_url).password,
            *(unquote(p) if p else None for p in passwords)]


def check_vendor_mode(config: Settings, vendor_modes: Mapping[str, bool]) -> None:
    """A vendor who makes links by hand (``vendor_modes[slug]`` True) needs the vendor page, whose tokens are
    signed with DUNLINK_SECRET_KEY: without it, start-up stops naming the variable and the vendors."""
    by_hand = sorted(slug for slug, by_vendor in vendor_modes.items() if by_vendor)
    if by_hand and config.secret_key is None:
        raise SettingsError(f"DUNLINK_SECRET_KEY: required when a vendor has replacement_by = \"vendor\" "
                            f"({', '.join(by_hand[:5])}): set a random secret of at least {SHORTEST_SECRET_KEY} "
                            "characters; it signs the links of the vendor page")


def load_checked_vendors(config: Settings) -> dict[str, Vendor]:
    """The vendors file, checked together with the settings it depends on."""
    vendors = load_vendors(config.vendors_file)
    check_vendor_mode(config, {slug: vendor.by_vendor for slug, vendor in vendors.items()})
    return vendors


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process, read at first use (start-up in every entry point); its secrets are
    redacted from every log line from then on."""

    config = load_settings()
    redact_secrets(secrets_of(config))
    return config
