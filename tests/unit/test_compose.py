"""docker-compose.yml, the Dockerfile and .env.example checked against the real CLI (Docker does not run here)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from celery.bin.base import CLIContext
from celery.bin.beat import beat
from celery.bin.worker import worker
from pydantic import ValidationError

from workers.celery_app import EMAIL_QUEUE, PLATFORM_QUEUE, get_app
from workers.cli import PASS_THROUGH, build_parser
from workers.settings import Settings
from workers.vendors import VendorsFileError, load_vendors

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
BIN = Path(sys.executable).parent
# ${VAR}, ${VAR:?message}, ${VAR:-default}; $${...} is a literal dollar for the container.
REFERENCE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?[?-][^}]*)?\}")


def env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            values[name.strip()] = value.strip()
    return values


def interpolate(value: str) -> str:
    """What compose makes of a string with .env filled in from .env.example."""
    example = env_example()
    return REFERENCE.sub(lambda m: example[m["name"]], value).replace("$$", "$")


def dunlink_services() -> dict[str, dict[str, Any]]:
    """Services that run the dunlink image with its ``dunlink`` entrypoint."""
    return {name: s for name, s in SERVICES.items() if s.get("image") == "dunlink:latest" and "entrypoint" not in s}


def command(service: dict[str, Any]) -> list[str]:
    raw = service["command"]
    return [interpolate(arg) for arg in (shlex.split(raw) if isinstance(raw, str) else raw)]


def test_every_service_of_a_deployment_is_there() -> None:
    assert set(SERVICES) == {"redis", "postgres", "migrate", "api", "worker-platform", "worker-email", "beat",
                             "flower", "mailpit", "sandbox"}
    assert set(dunlink_services()) == {"migrate", "api", "worker-platform", "worker-email", "beat", "sandbox"}
    assert SERVICES["flower"]["image"] == "dunlink:latest"


def test_redis_keeps_its_messages_across_a_restart() -> None:
    args = command(SERVICES["redis"])
    assert args[0] == "redis-server"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(volume.endswith(":/data") for volume in SERVICES["redis"]["volumes"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in SERVICES["postgres"]["volumes"])


def test_the_migration_runs_once_before_anything_touches_the_database() -> None:
    migrate = SERVICES["migrate"]
    assert command(migrate) == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in ("api", "worker-platform", "worker-email", "beat"):
        assert SERVICES[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        assert SERVICES[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name


@pytest.mark.parametrize("name", ["redis", "postgres", "api", "flower", "mailpit", "sandbox"])
def test_long_running_servers_have_health_checks(name: str) -> None:
    check = SERVICES[name]["healthcheck"]
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert check["retries"] >= 1
    if check["test"][1:3] == ["python", "-c"]:
        compile(check["test"][3], f"{name} healthcheck", "exec")
    paths = {"api": "/healthz", "flower": "/healthcheck"}
    if name in paths:
        assert f":{_port(name)}{paths[name]}'" in check["test"][3]


def _port(name: str) -> str:
    return str(SERVICES[name]["ports"][0]).split(":")[-1]


def test_one_beat_and_workers_for_both_queues() -> None:
    beats = [name for name, service in dunlink_services().items() if command(service)[0] == "beat"]
    assert beats == ["beat"]
    assert "deploy" not in SERVICES["beat"]
    queues = set()
    for service in dunlink_services().values():
        args = command(service)
        if args[0] == "worker":
            queues |= set(args[args.index("-Q") + 1].split(","))
    assert queues == {PLATFORM_QUEUE, EMAIL_QUEUE}


@pytest.mark.parametrize("name", sorted(dunlink_services()))
def test_each_dunlink_command_is_accepted_by_the_cli(name: str) -> None:
    args = command(SERVICES[name])
    parser = build_parser()
    if args[0] in PASS_THROUGH:
        # 'dunlink worker|beat ARGS' hands ARGS to celery: celery itself must accept them.
        parsed = parser.parse_args(args[:1])
        celery_command = {"worker": worker, "beat": beat}[args[0]]
        try:
            celery_command.make_context(args[0], args[1:],
                                        obj=CLIContext(app=get_app(), no_color=True, workdir=None))
        except click.ClickException as exc:
            pytest.fail(f"{name}: celery {args[0]} rejects {args[1:]}: {exc.format_message()}")
    else:
        try:
            parsed = parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{name}: dunlink rejects {args}")
    assert callable(parsed.handler)
    subcommand = args[:2] if args[0] == "db" else args[:1]
    shown = subprocess.run([str(BIN / "dunlink"), *subcommand, "--help"], capture_output=True, text=True,
                           timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"usage: dunlink {' '.join(subcommand)}")
    for option in (arg.split("=", 1)[0] for arg in args if arg.startswith("--") and args[0] not in PASS_THROUGH):
        assert option in shown.stdout, f"{name}: {option} is not an option of dunlink {args[0]}"


def test_the_cli_rejects_what_compose_must_not_say() -> None:
    """The check above can fail: a misspelt option is refused by both parsers."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["api", "--hots", "localhost"])
    with pytest.raises(click.NoSuchOption):
        worker.make_context("worker", ["--queue-name", "x"],
                            obj=CLIContext(app=get_app(), no_color=True, workdir=None))


def test_flower_runs_the_celery_app_behind_basic_auth_from_the_environment() -> None:
    flower = SERVICES["flower"]
    assert flower["entrypoint"] == ["celery", "-A", "workers", "flower"]
    raw = flower["command"]
    auth = [arg for arg in raw if arg.startswith("--basic-auth=")]
    assert auth == ["--basic-auth=${FLOWER_BASIC_AUTH:?set FLOWER_BASIC_AUTH in .env}"], \
        "Flower must take its credentials from .env and refuse to start without them"
    assert not any("unauthenticated" in arg for arg in raw)
    assert ":" in env_example()["FLOWER_BASIC_AUTH"]
    assert "FLOWER_BASIC_AUTH" not in json.dumps(flower.get("environment", {}))  # no value, so no default
    for text in (json.dumps(flower), (ROOT / "Dockerfile").read_text(encoding="utf-8"),
                 (ROOT / ".env.example").read_text(encoding="utf-8")):
        assert "FLOWER_UNAUTHENTICATED_API" not in text

    shown = subprocess.run([str(BIN / "celery"), "-A", "workers", "flower", "--help"], capture_output=True,
                           text=True, timeout=30, cwd=ROOT)
    assert shown.returncode == 0, shown.stderr
    # Flower's own options are tornado options: parse them the way 'celery flower' does.
    parse = "import sys, flower.options; from tornado.options import options; options.parse_command_line(sys.argv)"
    for args in (command(flower), ["--port=5555", "--basic-auth-typo=x"]):
        parsed = subprocess.run([sys.executable, "-c", parse, *args], capture_output=True, text=True, timeout=30)
        assert (parsed.returncode == 0) == (args == command(flower)), parsed.stderr


def test_every_referenced_variable_is_documented_in_env_example() -> None:
    referenced = {match["name"] for match in REFERENCE.finditer(COMPOSE_TEXT)}
    assert referenced >= {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"}
    assert referenced <= set(env_example())
    assert not REFERENCE.search(interpolate(COMPOSE_TEXT))
    assert re.fullmatch(r"[A-Za-z0-9_-]+", env_example()["POSTGRES_PASSWORD"]), "it goes into a URL unquoted"


def test_the_settings_in_env_example_start_dunlink_once_its_secrets_are_changed(tmp_path: Path) -> None:
    """Every DUNLINK_* variable a container gets is a real setting with a value that passes start-up checks, except
    the secrets: as they come in .env.example, start-up refuses them (naming the variable, never the value) until
    the operator changes them, as the file's first line asks."""
    environment = {**env_example(), **{k: interpolate(v) for k, v in SERVICES["api"]["environment"].items()}}
    fields = {f"DUNLINK_{name.upper()}": name for name in Settings.model_fields}
    given = {name: value for name, value in environment.items() if name.startswith("DUNLINK_")}
    assert set(given) <= set(fields), f"not settings: {set(given) - set(fields)}"
    with pytest.raises(ValidationError, match="platform_token"):
        Settings(**{fields[name]: value for name, value in given.items()})
    with pytest.raises(VendorsFileError, match="ACME_COPECART_IPN_SECRET is a placeholder"):
        load_vendors(ROOT / "vendors.example.toml", environ=environment)

    secrets = ("DUNLINK_PLATFORM_TOKEN", "ACME_COPECART_IPN_SECRET", "NORTHWIND_COPECART_IPN_SECRET")
    changed = {**environment, **{name: f"{name.lower()}-9f3c61d2a7" for name in secrets}}
    checked = Settings(**{fields[name]: value for name, value in changed.items() if name in given})
    assert checked.database_url.startswith("postgresql+psycopg://dunlink:")
    assert checked.smtp_url == "smtp://mailpit:1025"
    assert checked.platform_url == "http://sandbox:8090"

    assert "./vendors.toml:/etc/dunlink/vendors.toml:ro" in SERVICES["api"]["volumes"]
    assert given["DUNLINK_VENDORS_FILE"] == "/etc/dunlink/vendors.toml"
    vendors = load_vendors(ROOT / "vendors.example.toml", environ=changed)
    assert vendors, "cp vendors.example.toml vendors.toml gives a vendors file whose secrets .env.example names"


def test_the_dockerfile_installs_the_package_with_its_templates() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    instructions = [line.split(None, 1) for line in re.sub(r"\\\n", " ", dockerfile).splitlines()
                    if line.strip() and not line.startswith("#")]
    copied = {Path(src).name for kind, rest in instructions if kind == "COPY" for src in rest.split()[:-1]}
    assert {"pyproject.toml", "README.md", "requirements.lock", "domain", "adapters", "workers", "templates"} <= copied
    runs = " && ".join(rest for kind, rest in instructions if kind == "RUN")
    installs = [found.strip() for found in re.findall(r"pip install ([^&]+)", runs)]
    assert installs == ["-c requirements.lock ."], \
        "one non-editable install of the package from the copied sources, at the locked versions"
    assert "-e" not in runs.split() and "--editable" not in runs
    assert ["ENTRYPOINT", '["dunlink"]'] in instructions
    assert any(kind == "USER" and rest != "root" for kind, rest in instructions)

