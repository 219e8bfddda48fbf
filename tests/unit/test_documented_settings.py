"""Every setting and every vendors-file key that dunlink accepts is documented in the three places an operator
looks (vendors.example.toml, .env.example, the README), and nothing is documented there that dunlink does not
accept. The lists come from the code itself: the settings model and the vendors file's key lists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dunlink.config.settings import Settings
from dunlink.config.vendors import _OPTIONAL, _REQUIRED

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {f"DUNLINK_{name.upper()}" for name in Settings.model_fields}
VENDOR_KEYS = set(_REQUIRED) | set(_OPTIONAL)


def read(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def readme_tables() -> tuple[set[str], set[str]]:
    """The names in the first column of the tables of the README's Settings section: (settings, vendor keys)."""
    section = read("README.md").split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"^\| `([A-Za-z0-9_]+)` \|", section, re.MULTILINE))
    return {name for name in names if name.startswith("DUNLINK_")}, {n for n in names if not n.startswith("DUNLINK_")}


def difference(documented: set[str], accepted: set[str]) -> dict[str, list[str]]:
    return {"not documented": sorted(accepted - documented), "documented but not accepted": sorted(
        documented - accepted)}


NOTHING: dict[str, list[str]] = {"not documented": [], "documented but not accepted": []}


def test_the_code_knows_the_settings_and_keys_that_were_documented_nowhere() -> None:
    assert {"DUNLINK_PAYMENT_HOSTS", "DUNLINK_DATABASE_URL"} <= SETTINGS
    assert {"logo_url", "accent_colour", "grace_hours", "name"} <= VENDOR_KEYS


def test_env_example_lists_every_setting() -> None:
    documented = set(re.findall(r"^#? ?(DUNLINK_[A-Z0-9_]+)=", read(".env.example"), re.MULTILINE))
    # DUNLINK_DOMAIN is the proxy's (docker-compose.yml), not a setting of dunlink's own.
    assert difference(documented - {"DUNLINK_DOMAIN"}, SETTINGS) == NOTHING


def test_vendors_example_shows_every_key() -> None:
    documented = set(re.findall(r"^#? ?([a-z][a-z0-9_]*) *=", read("vendors.example.toml"), re.MULTILINE))
    assert difference(documented, VENDOR_KEYS) == NOTHING


@pytest.mark.parametrize("what", ["settings", "vendor keys"])
def test_the_readme_has_a_row_for_every_setting_and_key(what: str) -> None:
    settings, keys = readme_tables()
    documented, accepted = (settings, SETTINGS) if what == "settings" else (keys, VENDOR_KEYS)
    assert difference(documented, accepted) == NOTHING
