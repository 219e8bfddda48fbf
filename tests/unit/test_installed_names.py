"""The names dunlink installs at the top of site-packages, and that nothing else installed claims them.

The design card's folders (``domain``, ``adapters``, ``platforms``, ``workers``, ``templates``) keep their names:
the contract names ``workers`` for ``celery -A workers``, and operators' scripts and compose files use it.
Everything else lives under ``dunlink``, the distribution's own name, which no other package on PyPI can take.
The README's "Installed names" says so; this test fails if a dependency ever brings a package of the same name.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"domain", "adapters", "platforms", "workers", "templates", "dunlink"}


def test_dunlink_installs_exactly_these_top_level_names() -> None:
    found = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = found["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.removesuffix("*") for pattern in include} == OURS


def test_no_other_installed_distribution_provides_one_of_them() -> None:
    owners = packages_distributions()
    claimed = {name: sorted(set(owners.get(name, [])) - {"dunlink"}) for name in OURS}
    assert {name: others for name, others in claimed.items() if others} == {}
