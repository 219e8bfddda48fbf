"""docker-compose.yml, its rehearsal override and the env files, read the way compose reads them (Docker does
not run here): profiles, ``${VAR}`` interpolation, ``$$`` escapes and the ``!override`` / ``!reset`` tags."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
REHEARSAL_TEXT = (ROOT / "deploy" / "rehearsal.yml").read_text(encoding="utf-8")
# ${VAR}, ${VAR:?message}, ${VAR:-default}; $${...} is a literal dollar for the container.
REFERENCE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?[?-][^}]*)?\}")


@dataclass(frozen=True)
class Tagged:
    """A value an override file marks ``!override`` (replaces the base file's) or ``!reset`` (removes it)."""

    tag: str
    value: Any


class _ComposeLoader(yaml.SafeLoader):
    pass


def _tagged(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> Tagged:
    value: Any
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return Tagged(f"!{tag_suffix}", value)


_ComposeLoader.add_multi_constructor("!", _tagged)


def load(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(text, Loader=_ComposeLoader)  # noqa: S506 (a SafeLoader subclass)
    return loaded


COMPOSE = load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
REHEARSAL = load(REHEARSAL_TEXT)


def env_file(path: Path) -> dict[str, str]:
    """NAME=value lines, as compose reads an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f"{path.name}: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def env_example() -> dict[str, str]:
    return env_file(ROOT / ".env.example")


def rehearsal_env() -> dict[str, str]:
    return env_file(ROOT / "deploy" / "rehearsal.env")


def interpolate(value: str, variables: dict[str, str] | None = None) -> str:
    """What compose makes of a string, with .env filled in from ``variables`` (.env.example by default)."""
    given = env_example() if variables is None else variables
    return REFERENCE.sub(lambda m: given[m["name"]], value).replace("$$", "$")


def enabled(profiles: set[str]) -> set[str]:
    """The services compose starts with these profiles active: those without profiles, and those of an active one."""
    return {name for name, service in SERVICES.items() if not service.get("profiles")
            or profiles & set(service["profiles"])}


def dunlink_services() -> dict[str, dict[str, Any]]:
    """Services that run the dunlink image with its ``dunlink`` entrypoint."""
    return {name: s for name, s in SERVICES.items()
            if str(s.get("image", "")).startswith("dunlink:") and "entrypoint" not in s}


def command(service: dict[str, Any]) -> list[str]:
    raw = service["command"]
    return [interpolate(arg) for arg in (shlex.split(raw) if isinstance(raw, str) else raw)]


def health_check(service: dict[str, Any]) -> list[str]:
    """The service's health check as a command line (``CMD-SHELL`` runs in ``sh -c``, as in the container)."""
    test = [interpolate(part) for part in service["healthcheck"]["test"]]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    assert test[0] == "CMD", test
    return test[1:]


def published(service: dict[str, Any]) -> list[str]:
    """The service's ``ports`` in short syntax, interpolated."""
    return [interpolate(str(port)) for port in service.get("ports", [])]


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume in short syntax."""
    found = []
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        found.append((source, target))
    return found


def env_files(service: dict[str, Any]) -> list[str]:
    files = service.get("env_file", [])
    return [files] if isinstance(files, str) else list(files)
