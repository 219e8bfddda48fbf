"""The vendors file: who dunlink works for, their secrets and their dunning policy.

Read and checked once at start-up. Unknown keys, missing keys and bad values stop the process with one
line naming the vendor and the key, never a surprise at the first webhook.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adapters.email.footer import imprint_problem, is_support_url
from domain.links import DEFAULT_PAYMENT_HOSTS
from domain.policy import DunningPolicy, ReplacementBy, ReplacementKind
from dunlink.config.logs import redact_secrets
from platforms.registry import DEFAULT as DEFAULT_PLATFORM
from platforms.registry import PLATFORMS

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LOCALES = ("de", "en")
_EMAIL = re.compile(r"^[^@\s<>\"']+@[^@\s<>\"']+\.[^@\s<>\"']+$|^[^@\s<>\"']+@localhost$")
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")  # how environment variables are named, by convention
SHORTEST_SECRET = 16
# Values copied from examples and documentation instead of a real secret (compared without case, spaces,
# dashes or underscores), and words that mark one wherever they appear.
_PLACEHOLDERS = frozenset({"changeme", "secret", "password", "passwd", "sandboxtoken", "token", "test", "example",
                           "default", "placeholder", "replaceme", "todo", "none", "null", "empty", "xxx",
                           "yoursecret", "yourtoken", "mysecret", "secretkey", "apikey", "ipnsecret"})
_PLACEHOLDER_WORDS = ("changeme", "replaceme", "placeholder", "yoursecrethere", "yourtokenhere", "notasecret")

_REQUIRED = ("name", "summary_email", "locale", "timezone", "replacement", "reminder_days", "expire_after_days")
_OPTIONAL = ("reply_to", "copecart_ipn_secret", "copecart_ipn_secret_env", "grace_hours", "logo_url",
             "accent_colour", "imprint", "support_url", "replacement_by", "tasks_email", "payment_hosts", "platform",
             "digistore24_ipn_passphrase", "digistore24_ipn_passphrase_env", "digistore24_api_key",
             "digistore24_api_key_env")
_HOST = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def is_email_address(text: str) -> bool:
    """A bare address (``name@example.com``, or ``name@localhost``): no display name, spaces or controls."""
    return text.isprintable() and _EMAIL.match(text) is not None


def weak_secret(value: str) -> str | None:
    """Why ``value`` cannot be a secret (a known placeholder, or shorter than :data:`SHORTEST_SECRET`), or None.

    A placeholder left from an example file, or a short secret, lets anyone who guesses it sign webhooks or call
    the platform; and a short one would also be too common a string to redact from the logs. The answer never
    repeats the value.
    """
    folded = re.sub(r"[\s_\-.]", "", value.lower())
    if folded in _PLACEHOLDERS or any(word in folded for word in _PLACEHOLDER_WORDS) or len(set(folded)) <= 1:
        return "is a placeholder, not a secret: set the real one"
    if len(value) < SHORTEST_SECRET:
        return f"is too short: a secret must have at least {SHORTEST_SECRET} characters"
    return None


class VendorsFileError(Exception):
    """The vendors file cannot be used; the message is one line naming the file, vendor and key."""


@dataclass(frozen=True, slots=True)
class Vendor:
    slug: str
    name: str
    summary_email: str
    locale: str
    timezone: str
    copecart_ipn_secret: str = field(repr=False)
    policy: DunningPolicy
    reply_to: str | None = None
    logo_url: str | None = None
    accent_colour: str = "#1f6feb"
    # Who the vendor is, as the footer of every email (and the vendor's page) shows it: company, address,
    # register and VAT id, one per line; and where buyers find help. Both optional.
    imprint: str | None = None
    support_url: str | None = None
    # A vendor who makes replacements by hand in CopeCart (policy.replacement_by = "vendor") gets its task
    # emails at ``tasks_email``, and a link it pastes must point at one of ``payment_hosts`` (or a subdomain).
    tasks_email: str = ""
    payment_hosts: tuple[str, ...] = DEFAULT_PAYMENT_HOSTS
    # Which platform sells the vendor's products: its package verifies and reads the vendor's webhooks.
    platform: str = DEFAULT_PLATFORM

    # A Digistore24 vendor's IPN passphrase (its sha_sign) and API key.
    digistore24_ipn_passphrase: str = field(default="", repr=False)
    digistore24_api_key: str = field(default="", repr=False)

    @property
    def webhook_secret(self) -> str:
        """What the vendor's webhooks are signed with on its platform."""
        return self.digistore24_ipn_passphrase if self.platform == "digistore24" else self.copecart_ipn_secret

    @property
    def by_vendor(self) -> bool:
        return self.policy.replacement_by is ReplacementBy.VENDOR

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def load_vendors(path: Path, *, environ: Mapping[str, str] | None = None) -> dict[str, Vendor]:
    """Parse and validate the vendors file at ``path``."""
    env = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VendorsFileError(f"{path}: vendors file not found: start from the example with 'cp vendors.example.toml "
                               "vendors.toml', or set DUNLINK_VENDORS_FILE to your vendors file") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise VendorsFileError(f"{path}: cannot read the vendors file: {why} (set DUNLINK_VENDORS_FILE)") from None
    except tomllib.TOMLDecodeError as exc:
        raise VendorsFileError(f"{path}: not valid TOML: {exc}") from None
    vendors = parse_vendors(raw, source=str(path), environ=env)

    redact_secrets(secret for vendor in vendors.values() for secret in (
        vendor.copecart_ipn_secret, vendor.digistore24_ipn_passphrase, vendor.digistore24_api_key) if secret)
    return vendors


def parse_vendors(raw: Mapping[str, Any], *, source: str, environ: Mapping[str, str]) -> dict[str, Vendor]:
    extra = sorted(set(raw) - {"vendors"})
    if extra:
        raise VendorsFileError(f"{source}: unknown top-level key {extra[0]!r} (expected [vendors.<slug>])")
    tables = raw.get("vendors")
    if not isinstance(tables, dict) or not tables:
        raise VendorsFileError(f"{source}: no vendors: add a [vendors.<slug>] table")
    return {slug: _vendor(slug, table, source, environ) for slug, table in tables.items()}


def _vendor(slug: str, table: Any, source: str, environ: Mapping[str, str]) -> Vendor:
    def fail(key: str, problem: str) -> VendorsFileError:
        return VendorsFileError(f"{source}: vendor {slug!r}: {key}: {problem}")

    if not SLUG.match(slug):
        raise VendorsFileError(f"{source}: vendor {slug!r}: slug must be lowercase letters, digits, - or _")
    if not isinstance(table, dict):
        raise VendorsFileError(f"{source}: vendor {slug!r}: must be a table")
    for key in table:
        if key not in _REQUIRED and key not in _OPTIONAL:
            raise fail(key, "unknown key")
    for key in _REQUIRED:
        if key not in table:
            raise fail(key, "missing")

    def text(key: str, *, required: bool = True) -> str | None:
        value = table.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise fail(key, "must be a non-empty string")
        return value

    name = text("name")
    summary_email = text("summary_email")
    reply_to = text("reply_to", required=False)
    for key, address in (("summary_email", summary_email), ("reply_to", reply_to)):
        if address is not None and not is_email_address(address):
            raise fail(key, f"not an email address: {address!r}")
    locale = text("locale")
    if locale not in LOCALES:
        raise fail("locale", f"must be one of {', '.join(LOCALES)}")
    timezone = text("timezone")
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise fail("timezone", f"unknown time zone {timezone!r}") from None
    replacement = text("replacement")
    if replacement not in tuple(ReplacementKind):
        raise fail("replacement", f"must be one of {', '.join(ReplacementKind)}")

    days = table["reminder_days"]
    if not isinstance(days, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in days):
        raise fail("reminder_days", "must be a list of whole days, e.g. [3, 7]")
    expire = _whole("expire_after_days", table["expire_after_days"], fail)
    grace = _whole("grace_hours", table.get("grace_hours", 0), fail)
    made_by = text("replacement_by", required=False) or ReplacementBy.API.value
    if made_by not in tuple(ReplacementBy):
        raise fail("replacement_by", f"must be one of {', '.join(ReplacementBy)}")
    try:
        policy = DunningPolicy(ReplacementKind(replacement), tuple(days), expire, grace, ReplacementBy(made_by))
    except ValueError as exc:
        raise fail("reminder_days" if "reminder" in str(exc) else "expire_after_days", str(exc)) from None

    platform, secrets = _platform_secrets(table, environ, fail)
    if platform != "copecart" and policy.replacement_by is ReplacementBy.VENDOR:
        raise fail("replacement_by", "\"vendor\" is for CopeCart, which has no order API; "
                   f"{platform} makes the link through its API")
    logo_url = text("logo_url", required=False)
    if logo_url is not None and not logo_url.startswith("https://"):
        raise fail("logo_url", "must be an https:// URL")
    colour = text("accent_colour", required=False) or "#1f6feb"
    if not _COLOUR.match(colour):
        raise fail("accent_colour", "must be a colour such as #1f6feb")
    imprint = text("imprint", required=False)
    if imprint is not None:
        imprint = "\n".join(line.rstrip() for line in imprint.strip().replace("\r\n", "\n").split("\n"))
        if (problem := imprint_problem(imprint)) is not None:
            raise fail("imprint", problem)
    support_url = text("support_url", required=False)
    if support_url is not None and not is_support_url(support_url):
        raise fail("support_url", "must be an https:// URL (http:// only on a loopback host such as 127.0.0.1), "
                   "without spaces, quotes or a user name")
    tasks_email, hosts = _where_links_go(table, str(summary_email), fail)
    return Vendor(slug=slug, name=str(name), summary_email=str(summary_email), locale=str(locale),
                  timezone=str(timezone), copecart_ipn_secret=secrets.get("copecart_ipn_secret", ""), policy=policy,
                  reply_to=reply_to, logo_url=logo_url, accent_colour=colour, imprint=imprint, support_url=support_url,
                  tasks_email=tasks_email, payment_hosts=hosts, platform=platform,
                  digistore24_ipn_passphrase=secrets.get("digistore24_ipn_passphrase", ""),
                  digistore24_api_key=secrets.get("digistore24_api_key", ""))


def _where_links_go(table: Mapping[str, Any], summary_email: str, fail: Any) -> tuple[str, tuple[str, ...]]:
    """For links the vendor makes by hand: where its task emails go and which hosts a pasted link may point at."""
    tasks_email = table.get("tasks_email", summary_email)
    if not isinstance(tasks_email, str) or not is_email_address(tasks_email):
        raise fail("tasks_email", f"not an email address: {tasks_email!r}")
    return tasks_email, _payment_hosts(table.get("payment_hosts"), fail)


def _payment_hosts(value: Any, fail: Any) -> tuple[str, ...]:
    """Host names only (``copecart.com``, ``127.0.0.1``): a scheme, path or wildcard is a mistake to name."""
    if value is None:
        return DEFAULT_PAYMENT_HOSTS
    if not isinstance(value, list) or not value or not all(isinstance(host, str) for host in value):
        raise fail("payment_hosts", 'must be a list of host names, e.g. ["copecart.com"]')
    hosts = []
    for host in value:
        folded = host.strip().lower().rstrip(".")
        if not _HOST.match(folded):
            raise fail("payment_hosts", f"{host!r} is not a host name (give copecart.com, not https://copecart.com/ "
                       "nor *.copecart.com: subdomains are included)")
        hosts.append(folded)
    return tuple(hosts)


def _whole(key: str, value: Any, fail: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise fail(key, "must be a whole number")
    return value


def _secret(table: Mapping[str, Any], environ: Mapping[str, str], fail: Any,
            key: str = "copecart_ipn_secret") -> str:
    """The secret ``key``, inline or (``<key>_env``) from the environment; weak ones and placeholders refused."""
    inline, env_name = table.get(key), table.get(f"{key}_env")
    if inline is not None and env_name is not None:
        raise fail(key, f"give either {key} or {key}_env, not both")
    if env_name is not None:
        if not isinstance(env_name, str) or not env_name:
            raise fail(f"{key}_env", "must name an environment variable")
        value = environ.get(env_name)
        if not value:
            if _ENV_NAME.match(env_name):
                raise fail(f"{key}_env", f"environment variable {env_name} is not set")
            # Not a variable's name: most likely the secret itself, pasted here; never repeat it.
            raise fail(f"{key}_env", "must be the NAME of an environment variable (such as "
                       "ACME_IPN_SECRET) that holds the secret, not the secret itself")
        problem = weak_secret(value)
        if problem:
            raise fail(f"{key}_env", f"the secret in environment variable {env_name} {problem}")
        return value
    if inline is None:
        raise fail(key, f"missing (or set {key}_env)")
    if not isinstance(inline, str) or not inline:
        raise fail(key, "must be a non-empty string")
    problem = weak_secret(inline)
    if problem:
        raise fail(key, f"the secret {problem}")
    return inline


# The secrets each platform's vendors give, and the keys of the others that must not be there.
_SECRETS = {"copecart": ("copecart_ipn_secret",), "digistore24": ("digistore24_ipn_passphrase", "digistore24_api_key")}


def _platform_secrets(table: Mapping[str, Any], environ: Mapping[str, str],
                      fail: Any) -> tuple[str, dict[str, str]]:
    """The vendor's platform and its secrets, read as that platform needs them."""
    platform = table.get("platform", DEFAULT_PLATFORM)
    if platform not in PLATFORMS:
        raise fail("platform", f"must be one of {', '.join(sorted(PLATFORMS))}")
    for other, keys in _SECRETS.items():
        for key in keys:
            if other != platform and (key in table or f"{key}_env" in table):
                raise fail(key, f"belongs to platform = \"{other}\", not \"{platform}\"")
    return str(platform), {key: _secret(table, environ, fail, key) for key in _SECRETS[str(platform)]}
