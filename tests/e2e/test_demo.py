"""``dunlink demo`` as a first-time user runs it: nothing configured, nothing else running."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
import redis

from tests.support.command import run_to_end
from tests.support.stack import REDIS_BASE

RUN_TIMEOUT_S = 90.0
UNSET = ("DUNLINK_BROKER_URL", "DUNLINK_DATABASE_URL", "DUNLINK_VENDORS_FILE", "DUNLINK_SMTP_URL")

# order -> (vendor, buyer, amount still owed as printed, final state)
EXPECTED = {
    "CC-1001": ("acme", "anna@example.com", "200,00 €", "awaiting_payment"),
    "CC-1002": ("acme", "jonas@example.com", "792,00 €", "recovered"),
    "CC-1003": ("acme", "lea@example.com", "200,00 €", "awaiting_payment"),
    "GX-2001": ("globex", "oliver@example.co.uk", "€897.00", "awaiting_payment"),
    "GX-2002": ("globex", "amelia@example.co.uk", "€147.00", "recovered"),
    "GX-2003": ("globex", "harry@example.co.uk", "€75.00", "awaiting_payment"),
    # hooli makes its replacements by hand in CopeCart: the demo plays the vendor after its task email.
    "HK-3001": ("hooli", "mia@example.com", "237,00 €", "awaiting_payment"),
    # sunrise sells on Digistore24: a payment link for what is owed, paid through it.
    "DS-4001": ("sunrise", "noah@example.co.uk", "€117.00", "recovered"),
}
TASKS = "aufgaben@hooli.example"
LINK = re.compile(r"^http://127\.0\.0\.1:\d+/(pay|ds24/buy)/(?P<order>\S+)$")


@dataclass(frozen=True)
class Row:
    order: str
    vendor: str
    owed: str
    replacement: str
    link: str
    state: str


@dataclass(frozen=True)
class Run:
    result: subprocess.CompletedProcess[str]
    wall_s: float  # from starting the command to its exit, as the user waited

    @property
    def stdout(self) -> str:
        return self.result.stdout


def run_demo(folder: Path, *args: str) -> Run:
    """Run ``dunlink demo`` in ``folder``; on a hang, interrupt it so it stops its children."""
    env = {key: value for key, value in os.environ.items() if key not in UNSET}
    began = time.monotonic()
    result = run_to_end("demo", *args, cwd=folder, env=env, timeout=RUN_TIMEOUT_S, stop=signal.SIGINT, grace=20)
    return Run(result, time.monotonic() - began)


def table(out: str) -> list[Row]:
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["order", "vendor", "owed", "replacement",
                                                                         "payment", "link", "state"])
    assert set(lines[header + 1].replace(" ", "")) == {"-"}
    rows = []
    for line in lines[header + 2:]:
        if not line.strip():
            break
        rows.append(Row(*re.split(r" {2,}", line.strip())))
    return rows


def mail_folder(out: str) -> Path:
    found = re.search(r"^Emails \((\d+)\): (.+?)  \(\.eml files", out, re.MULTILINE)
    assert found, out
    assert found[1] == str(len(EXPECTED) + 1)  # each buyer's, and the vendor's task
    return Path(found[2])


def check_progress(out: str, wall_s: float) -> None:
    """A line as each process comes up and as it goes down, and a total that is the wall time the user waited."""
    lines = out.splitlines()

    def at(pattern: str) -> int:
        found = [i for i, line in enumerate(lines) if re.match(pattern, line)]
        assert len(found) == 1, (pattern, out)
        return found[0]

    seeded = at(r"  seeded 8 installment orders for 4 vendors \(hooli makes")
    table_end, done = at(r"DS-4001 "), at(r"Done in ")
    for process in ("sandbox", "api", "worker", "beat"):
        assert at(rf"    {process} +up after +\d+\.\ds: ") < seeded
        assert table_end < at(rf"    {process} +stopped after +\d+\.\ds") < done
    total = re.fullmatch(r"Done in (\d+\.\d)s\.", lines[done])
    assert total, lines[done]
    # The total counts from the moment the process started to just before it exits.
    assert wall_s - 1.5 <= float(total[1]) <= wall_s + 0.1, (total[1], wall_s)
    assert "The payment links above are dead now: the sandbox platform that served them stopped with the demo." in out


def check_ops_cli(out: str, folder: Path) -> None:
    """The lines the demo gives to paste into a shell reach its cases with ``dunlink cases list``."""
    exports = dict(re.findall(r"^  export (DUNLINK_[A-Z_]+)=(.+)$", out, re.MULTILINE))
    assert set(exports) == {"DUNLINK_DATABASE_URL", "DUNLINK_VENDORS_FILE"}, out
    command = re.search(r"^  (\S*dunlink) cases list$", out, re.MULTILINE)
    assert command, out
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("DUNLINK_")}
    env |= {name: shlex.split(value)[0] for name, value in exports.items()}
    listing = subprocess.run([*shlex.split(command[1]), "cases", "list"], cwd=folder, env=env, capture_output=True,
                             text=True, timeout=60, check=False)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[-1] == f"{len(EXPECTED)} cases"
    assert {line.split()[2] for line in listing.stdout.splitlines()[2:-1]} == set(EXPECTED)


def check_run(run: Run) -> Path:
    """Everything a user sees after one run; returns the run's folder."""
    result = run.result
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    check_progress(result.stdout, run.wall_s)
    rows = table(result.stdout)
    assert [(r.order, r.vendor, r.owed, r.state) for r in rows] == [
        (order, vendor, owed, state) for order, (vendor, _, owed, state) in EXPECTED.items()]
    for row in rows:
        link = LINK.match(row.link)
        assert link, row
        assert link["order"] == row.replacement != row.order
    assert len({row.replacement for row in rows}) == len(EXPECTED)

    folder = mail_folder(result.stdout)
    emls = sorted(folder.glob("*.eml"))
    htmls = sorted(folder.glob("*.html"))
    assert len(emls) == len(EXPECTED) + 1
    assert len(htmls) == len(EXPECTED) + 1
    links = {EXPECTED[row.order][1]: (row.link, row.owed) for row in rows}
    cases = set()
    for path in emls:
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        assert message.get_content_type() == "multipart/alternative"
        assert message["X-Dunlink-Case"]
        cases.add(str(message["X-Dunlink-Case"]))
        [buyer] = [address.addr_spec for address in message["To"].addresses]
        if buyer == TASKS:
            task = message.get_body(("plain",))
            assert task is not None and "HK-3001" in task.get_content() and "/vendor/cases/" in task.get_content()
            continue
        link, owed = links.pop(buyer)
        for part in ("plain", "html"):
            body = message.get_body((part,))
            assert body is not None, f"{path.name} has no text/{part} part"
            assert link in body.get_content()
            assert owed in body.get_content()
    assert links == {}, "every buyer got exactly one email"
    assert len(cases) == len(EXPECTED)
    pages = [page for page in (html.read_text(encoding="utf-8") for html in htmls) if "/vendor/cases/" not in page]
    assert {row.link for row in rows} == {row.link for row in rows for page in pages if row.link in page}
    assert all(sum(row.link in page for row in rows) == 1 for page in pages)
    check_ops_cli(result.stdout, folder.parents[3])  # the folder the demo ran in
    return folder.parent


def test_demo_runs_on_a_fresh_machine_and_again(tmp_path: Path) -> None:
    first = check_run(run_demo(tmp_path))
    assert first.parent == tmp_path / "var" / "demo"

    second = check_run(run_demo(tmp_path))
    assert second.parent == first.parent
    assert second != first
    assert len(list(first.parent.iterdir())) == 2


def _dbsize(url: str) -> int:
    with redis.Redis.from_url(url) as client:
        return int(client.dbsize())


@pytest.mark.redis
def test_demo_runs_on_a_real_redis(tmp_path: Path) -> None:
    url = next(url for url in (f"{REDIS_BASE}/{n}" for n in range(15, 0, -1))
               if _dbsize(url) == 0)  # a database no other test is using right now
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        result = run_demo(tmp_path, "--broker", url)
        assert f"broker: {url}" in result.stdout
        check_run(result)
    finally:
        client.flushdb()
        client.close()
