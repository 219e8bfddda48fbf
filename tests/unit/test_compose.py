"""docker-compose.yml, its rehearsal override, the Dockerfile and the env files checked against the real CLI and
settings (Docker does not run here): what production shape starts and exposes, what a rehearsal may touch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
from celery.bin.base import CLIContext
from celery.bin.beat import beat
from celery.bin.worker import worker
from pydantic import ValidationError

from dunlink.cli.main import PASS_THROUGH, build_parser
from dunlink.config.settings import Settings
from dunlink.config.vendors import VendorsFileError, load_vendors
from dunlink.usecases.ports import EMAIL_QUEUE, PLATFORM_QUEUE
from tests.support.compose import (
    COMPOSE_TEXT,
    REFERENCE,
    REHEARSAL,
    REHEARSAL_TEXT,
    ROOT,
    SERVICES,
    Tagged,
    command,
    dunlink_services,
    enabled,
    env_example,
    env_files,
    interpolate,
    mounts,
    published,
    rehearsal_env,
)
from workers.celery_app import get_app

BIN = Path(sys.executable).parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
REHEARSAL_SERVICES = {"sandbox", "mailpit"}
# A release (7.4.11, v1.30.5, PostgreSQL's 16.15) with an optional variant (-alpine3.21), then the digest.
PINNED = re.compile(r"(?P<name>[a-z0-9./-]+):(?P<tag>v?\d+\.\d+(?P<patch>\.\d+)?(-[a-z0-9.-]+)?)"
                    r"(@sha256:(?P<digest>[0-9a-f]{64}))?")
# DUNLINK_* variables of .env that are not Settings fields: the proxy's host name.
NOT_SETTINGS = {"DUNLINK_DOMAIN"}


def test_every_service_of_a_deployment_is_there() -> None:
    assert set(SERVICES) == {"redis", "postgres", "migrate", "api", "worker-platform", "worker-email", "beat",
                             "flower", "proxy", "mailpit", "sandbox"}
    assert set(dunlink_services()) == {"migrate", "api", "worker-platform", "worker-email", "beat", "sandbox"}
    assert SERVICES["flower"]["image"] == f"dunlink:{VERSION}"


def test_production_shape_starts_neither_the_sandbox_nor_mailpit() -> None:
    """`docker compose up` (no profile) has no signing sandbox and no mail catcher; the rehearsal profile adds both."""
    production = enabled(set())
    assert not production & REHEARSAL_SERVICES
    assert production == set(SERVICES) - REHEARSAL_SERVICES
    assert enabled({"rehearsal"}) == set(SERVICES)
    for name in REHEARSAL_SERVICES:
        assert SERVICES[name]["profiles"] == ["rehearsal"], name


def test_only_the_proxy_is_published_beyond_localhost() -> None:
    for name, service in SERVICES.items():
        if name == "proxy":
            assert published(service) == ["80:80", "443:443"], "the front: HTTP (ACME, redirect) and HTTPS"
            continue
        for port in published(service):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert published(SERVICES["api"]) == ["127.0.0.1:8000:8000"], "the api is reached through the proxy"
    for name, service in REHEARSAL["services"].items():
        ports = service.get("ports")
        if ports is not None:
            assert isinstance(ports, Tagged) and ports.tag == "!override", f"{name}: replace, don't add to, its ports"
            assert all(str(port).startswith("127.0.0.1:") for port in ports.value), name


def test_every_image_is_pinned_to_an_exact_version() -> None:
    for name, service in SERVICES.items():
        image = interpolate(service["image"])
        pinned = PINNED.fullmatch(image)
        assert pinned, f"{name}: {image} is not pinned to a version (no latest, no bare major tag)"
        assert pinned["patch"] or pinned["digest"], f"{name}: {image}: a minor line is pinned only by its digest"
        if pinned["name"] == "dunlink":
            assert pinned["tag"] == VERSION, f"{name}: dunlink's image carries the version of pyproject.toml"
            assert "build" in service
        elif "/" not in pinned["name"]:
            assert pinned["digest"], f"{name}: an official image is pinned by its digest too"
    base = [line.split()[1] for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
            if line.startswith("FROM ")]
    assert base and all((found := PINNED.fullmatch(image)) and found["digest"] for image in base), base


def test_the_rehearsal_vendors_and_secrets_stay_with_the_sandbox() -> None:
    """Only the sandbox signs with rehearsal secrets, and it never sees the production vendors file or .env."""
    for name, service in SERVICES.items():
        if name == "sandbox":
            continue
        assert not any("rehearsal" in source for source, _ in mounts(service)), name
        assert not any("rehearsal" in path for path in env_files(service)), name

    sandbox = SERVICES["sandbox"]
    assert ("./vendors.toml", "/etc/dunlink/vendors.toml") not in mounts(sandbox)
    assert mounts(sandbox) == [("./vendors.rehearsal.toml", "/etc/dunlink/vendors.rehearsal.toml")]
    assert sandbox["environment"]["DUNLINK_VENDORS_FILE"] == "/etc/dunlink/vendors.rehearsal.toml"
    assert env_files(sandbox) == ["deploy/rehearsal.env"], "never .env, where production secrets live"
    assert not REFERENCE.search(json.dumps(sandbox)), "nothing interpolated from the production .env"

    # The rehearsal vendors file takes its secrets from rehearsal variables only, which production never sets.
    rehearsal = rehearsal_env()
    vendors = load_vendors(ROOT / "vendors.rehearsal.toml", environ=rehearsal)
    assert set(vendors) == {"acme", "northwind"}
    text = (ROOT / "vendors.rehearsal.toml").read_text(encoding="utf-8")
    named = set(re.findall(r'copecart_ipn_secret_env = "([A-Z0-9_]+)"', text))
    assert named and all(name.startswith("REHEARSAL_") for name in named)
    assert not named & set(env_example()), "a production .env could satisfy them"
    assert "copecart_ipn_secret =" not in text
    production_secrets = {value for value in env_example().values() if "change-me" not in value}
    assert not {vendor.copecart_ipn_secret for vendor in vendors.values()} & production_secrets


def test_a_rehearsal_is_a_project_of_its_own_on_rehearsal_settings() -> None:
    """deploy/rehearsal.yml: every dunlink service on deploy/rehearsal.env and vendors.rehearsal.toml instead of
    .env and vendors.toml, its own volumes, and no start without the sandbox and mailpit."""
    assert REHEARSAL["name"] == "dunlink-rehearsal"
    overridden = REHEARSAL["services"]
    on_env = {name for name, service in SERVICES.items() if ".env" in env_files(service)}
    assert on_env == {"migrate", "api", "worker-platform", "worker-email", "beat", "flower"}
    for name in on_env:
        assert overridden[name]["env_file"] == Tagged("!override", "deploy/rehearsal.env"), name
        assert overridden[name]["volumes"] == Tagged(
            "!override", ["./vendors.rehearsal.toml:/etc/dunlink/vendors.toml:ro"]), name
    assert set(overridden["api"]["depends_on"]) == REHEARSAL_SERVICES, \
        "without --profile rehearsal compose refuses a project whose api depends on disabled services"
    assert "!reset" not in REHEARSAL_TEXT

    # `--env-file deploy/rehearsal.env` gives compose every variable the file interpolates, and the containers
    # settings that start dunlink against the sandbox and mailpit.
    rehearsal = rehearsal_env()
    assert {match["name"] for match in REFERENCE.finditer(COMPOSE_TEXT)} <= set(rehearsal)
    environment = {**rehearsal, **{k: interpolate(v, rehearsal) for k, v in SERVICES["api"]["environment"].items()}}
    checked = _settings(environment)
    assert checked.platform_url == "http://sandbox:8090"
    assert checked.smtp_url == "smtp://mailpit:1025"
    assert interpolate(SERVICES["sandbox"]["command"][-1]) == "http://api:8000"
    assert not any("change-me" in value for value in rehearsal.values())


@pytest.mark.parametrize("name", ["redis", "postgres", "api", "worker-platform", "worker-email", "beat", "flower",
                                  "proxy", "mailpit", "sandbox"])
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
    return published(SERVICES[name])[0].split(":")[-1]


def test_every_long_running_dunlink_service_has_a_health_check() -> None:
    """Workers and beat are healthy while they answer Celery's ping under the node name their command gives."""
    running = {name for name, service in SERVICES.items() if str(service.get("image", "")).startswith("dunlink:")
               and service.get("restart") != "no"}
    assert running == {"api", "worker-platform", "worker-email", "beat", "flower", "sandbox"}
    for name in running:
        assert "healthcheck" in SERVICES[name], name
    for name in ("worker-platform", "worker-email", "beat"):
        args = command(SERVICES[name])
        node = args[args.index("-n") + 1] if args[0] == "worker" else "celerybeat@%h"
        check = SERVICES[name]["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL"
        assert interpolate(check[1]) == \
            f"celery -A workers inspect ping --destination {node.replace('%h', '$HOSTNAME')} --timeout 10", name
        assert "$$HOSTNAME" in check[1], "the container's shell expands it, not compose"
        assert check.__len__() == 2
    assert "--enable-remote-control" in command(SERVICES["beat"]), "beat answers the ping only when asked to"


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


def test_the_migration_runs_once_before_anything_touches_the_database() -> None:
    migrate = SERVICES["migrate"]
    assert command(migrate) == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in ("api", "worker-platform", "worker-email", "beat"):
        assert SERVICES[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        assert SERVICES[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name


def test_redis_keeps_its_messages_across_a_restart() -> None:
    args = command(SERVICES["redis"])
    assert args[0] == "redis-server"
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    assert any(volume.endswith(":/data") for volume in SERVICES["redis"]["volumes"])
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in SERVICES["postgres"]["volumes"])


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
    assert published(flower) == ["127.0.0.1:5555:5555"]
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
    assert referenced >= {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH", "DUNLINK_DOMAIN"}
    assert referenced <= set(env_example())
    assert not REFERENCE.search(interpolate(COMPOSE_TEXT))
    assert re.fullmatch(r"[A-Za-z0-9_-]+", env_example()["POSTGRES_PASSWORD"]), "it goes into a URL unquoted"
    assert SERVICES["proxy"]["environment"] == {"DUNLINK_DOMAIN": "${DUNLINK_DOMAIN:?set DUNLINK_DOMAIN in .env}"}


def test_env_example_points_production_at_the_operators_platform_and_mail_server() -> None:
    """Nothing in .env.example points production workers at the sandbox or mailpit, which production never runs;
    every secret is a placeholder to replace, and once replaced the settings start dunlink."""
    example = env_example()
    environment = {**example, **{k: interpolate(v) for k, v in SERVICES["api"]["environment"].items()}}
    fields = {f"DUNLINK_{name.upper()}": name for name in Settings.model_fields}
    given = {name: value for name, value in environment.items() if name.startswith("DUNLINK_")}
    assert set(given) <= set(fields) | NOT_SETTINGS, f"not settings: {set(given) - set(fields)}"
    assert "DUNLINK_OPS_TOKEN" in given, "Prometheus scrapes /metrics with it"

    secrets = {name for name, value in example.items() if "change-me" in value}
    assert secrets == {"POSTGRES_PASSWORD", "DUNLINK_PLATFORM_TOKEN", "DUNLINK_SMTP_URL", "DUNLINK_OPS_TOKEN",
                       "FLOWER_BASIC_AUTH", "ACME_COPECART_IPN_SECRET", "NORTHWIND_COPECART_IPN_SECRET",
                       "LUMEN_COPECART_IPN_SECRET", "DUNLINK_SECRET_KEY", "LUMEN_DIGISTORE24_IPN_PASSPHRASE",
                       "LUMEN_DIGISTORE24_API_KEY"}
    filled = {name: value.replace("change-me", "a-long-secret-chosen-by-the-operator") for name, value in
              environment.items()}
    with pytest.raises(ValidationError, match="platform_token"):
        _settings(environment)  # as it comes, start-up refuses the placeholders, naming the variable
    with pytest.raises(VendorsFileError, match="ACME_COPECART_IPN_SECRET is a placeholder"):
        load_vendors(ROOT / "vendors.example.toml", environ=environment)
    checked = _settings(filled)
    assert checked.database_url.startswith("postgresql+psycopg://dunlink:")
    for setting in (checked.platform_url, checked.smtp_url):
        assert not re.search(r"//([^/]*@)?(sandbox|mailpit)\b", setting), setting
    assert checked.platform_url.startswith("https://")

    assert "./vendors.toml:/etc/dunlink/vendors.toml:ro" in SERVICES["api"]["volumes"]
    assert given["DUNLINK_VENDORS_FILE"] == "/etc/dunlink/vendors.toml"
    vendors = load_vendors(ROOT / "vendors.example.toml", environ=filled)
    assert vendors, "cp vendors.example.toml vendors.toml gives a vendors file whose secrets .env.example names"


def _settings(environment: dict[str, Any]) -> Settings:
    fields = {f"DUNLINK_{name.upper()}": name for name in Settings.model_fields}
    return Settings(**{fields[name]: value for name, value in environment.items() if name in fields})


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
