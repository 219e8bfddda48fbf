"""Does the installed environment satisfy dunlink's requirements, its ``dev`` extra's included?

``pip check`` looks at what installed packages require, and an extra's requirements are not among them:
without this, a ``dev`` requirement raised in pyproject.toml but not in requirements.lock would install
quietly and fail later, far from the cause.

    .venv/bin/python .ci/lock_check.py [extra ...]
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement


def unmet(extras: list[str]) -> list[str]:
    problems = []
    for text in metadata.requires("dunlink") or []:
        requirement = Requirement(text)
        wanted = requirement.marker is None or any(requirement.marker.evaluate({"extra": extra})
                                                   for extra in ["", *extras])
        if not wanted:
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement}: not installed")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement}: {installed} installed")
    return problems


def main() -> int:
    problems = unmet(sys.argv[1:])
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("requirements.lock does not satisfy pyproject.toml: run `make lock`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
