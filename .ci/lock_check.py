"""Does the installed environment satisfy dunlink's requirements, and are the two locks split as they should be?

``pip check`` looks at what installed packages require, and an extra's requirements are not among them:
without this, a ``dev`` requirement raised in pyproject.toml but not in requirements-dev.lock would install
quietly and fail later, far from the cause.

With ``--locks RUNTIME DEV`` it also checks the split: ``make demo`` installs the runtime lock alone, so it must
hold exactly what dunlink needs at run time (its requirements and theirs, followed through the installed
packages' metadata), and the dev lock only what the development tools add, no package pinned in both.

    .venv/bin/python .ci/lock_check.py [extra ...] [--locks requirements.lock requirements-dev.lock]
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


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


def run_time_closure() -> set[str]:
    """The canonical names of every package dunlink needs at run time: its requirements without extras, theirs
    with the extras they name, and so on, as the installed packages' metadata says."""
    needed: set[str] = set()
    seen: set[tuple[str, str]] = set()
    pending: list[tuple[str, str]] = [("dunlink", "")]
    while pending:
        name, extra = pending.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
                continue
            child = canonicalize_name(requirement.name)
            needed.add(child)
            pending += [(child, "")] + [(child, wanted) for wanted in requirement.extras]
    return needed


def pins(lock: Path) -> dict[str, str]:
    """``canonical name -> line`` for each ``name==version`` line of a lock."""
    found = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            found[canonicalize_name(Requirement(line).name)] = line
    return found


def split_problems(runtime_lock: Path, dev_lock: Path) -> list[str]:
    runtime, dev = pins(runtime_lock), pins(dev_lock)
    needed = run_time_closure()
    problems = [f"{runtime[name]}: pinned in both {runtime_lock} and {dev_lock}" for name in sorted(runtime)
                if name in dev]
    problems += [f"{runtime[name]}: in {runtime_lock}, but dunlink does not need it at run time" for name in
                 sorted(set(runtime) - needed)]
    problems += [f"{name}: dunlink needs it at run time, but {runtime_lock} does not pin it" for name in
                 sorted(needed - set(runtime))]
    return problems


def main(argv: list[str]) -> int:
    extras, locks = argv, []
    if "--locks" in argv:
        at = argv.index("--locks")
        extras, locks = argv[:at], argv[at + 1:]
        if len(locks) != 2:
            print("usage: lock_check.py [extra ...] [--locks RUNTIME_LOCK DEV_LOCK]", file=sys.stderr)
            return 2
    problems = unmet(extras)
    if locks:
        problems += split_problems(Path(locks[0]), Path(locks[1]))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print("the locks do not match pyproject.toml: run `make lock`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
