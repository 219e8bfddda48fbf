"""Every ``dunlink`` command and subcommand answers ``--help`` with a description of what it does."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dunlink.cli.main import build_parser

DUNLINK = Path(sys.executable).parent / "dunlink"


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from commands(sub, (*path, name))


def test_every_command_has_a_description() -> None:
    found = dict(commands(build_parser()))
    assert {"api", "sandbox", "worker", "beat", "demo", "due", "db", "db upgrade", "cases", "cases list",
            "emails", "emails preview"} <= {" ".join(path) for path in found}
    undescribed = [" ".join(path) for path, parser in found.items() if not (parser.description or "").strip()]
    assert undescribed == []


@pytest.mark.parametrize(("command", "says"), [
    (["api"], "CopeCart"), (["sandbox"], "order API"), (["db", "upgrade"], "migration")])
def test_help_says_what_the_command_does(command: list[str], says: str) -> None:
    result = subprocess.run([str(DUNLINK), *command, "--help"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    description = result.stdout.split("\n\n")[1]  # after the usage lines, before the options
    assert not description.startswith(("options:", "positional arguments:")), result.stdout
    assert says in description
