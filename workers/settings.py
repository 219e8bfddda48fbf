"""Process settings from ``DUNLINK_*`` environment variables (12-factor).

Every value is checked when a process starts; a bad one stops it with one line that names the variable
and what is wrong, so nothing fails hours later in the middle of a payment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(Exception):
    """A setting is missing or malformed; the message is one line for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DUNLINK_", extra="ignore", frozen=True)

    database_url: str = "sqlite:///var/dunlink.db"
    broker_url: str = "redis://127.0.0.1:6379/0"
    platform_url: str = "http://127.0.0.1:8090"
    platform_token: str = Field(default="sandbox-token", repr=False)
    smtp_url: str = Field(default="smtp://127.0.0.1:1025", repr=False)
    mail_from: str = "dunning@localhost"
    vendors_file: Path = Path("vendors.toml")
    payment_hosts: str = ""
    platform_timeout: float = 5.0
    lease_seconds: int = 60
    vendor_summaries: bool = True

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

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if not scheme.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        if scheme in ("postgresql", "postgres"):
            # The contract names psycopg 3 as the PostgreSQL driver; plain URLs mean it.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        elif scheme.startswith("postgresql+") and scheme != "postgresql+psycopg":
            raise ValueError("PostgreSQL is reached through psycopg 3: use postgresql+psycopg://")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError("must be a URL such as redis://127.0.0.1:6379/0")
        return value

    @field_validator("platform_url")
    @classmethod
    def _platform(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value.rstrip("/")

    @field_validator("payment_hosts")
    @classmethod
    def _payment_hosts(cls, value: str) -> str:
        hosts = [host.strip().lower() for host in value.split(",") if host.strip()]
        if any("/" in host or ":" in host or " " in host for host in hosts):
            raise ValueError("must be host names separated by commas, e.g. pay.example.com,example.com")
        return ",".join(hosts)

    @property
    def allowed_payment_hosts(self) -> frozenset[str]:
        """Hosts a payment link in a buyer's email may point at: the platform's own, plus those configured."""
        platform = urlsplit(self.platform_url).hostname or ""
        return frozenset({platform.lower(), *filter(None, self.payment_hosts.split(","))})

    @field_validator("platform_token")
    @classmethod
    def _token(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp(cls, value: str) -> str:
        from adapters.email.smtp import SmtpSender

        try:
            SmtpSender.from_url(value)  # the sender's own checks, at start-up rather than at the first email
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("DUNLINK_SMTP_URL: ")) from None
        return value

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        local, _, domain = value.partition("@")
        if not local or not domain or any(c in value for c in " <>\r\n\"'"):
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


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process, read at first use (start-up in every entry point)."""
    return load_settings()
