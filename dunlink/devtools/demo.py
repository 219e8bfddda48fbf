"""``dunlink demo``: the whole pipeline on a fresh machine, with nothing installed or configured.

It starts the sandbox platform, a local mail catcher, the webhook app, a worker and beat on an embedded
broker and SQLite, seeds installment orders for a German and an English vendor, fails installments through
the sandbox so real signed IPNs travel over HTTP, and shows what came of each case.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.migrate import upgrade
from adapters.db.uow import SqlUnitOfWork
from adapters.email.capture import MailCatcher
from adapters.email.render import format_money
from domain.case import DunningCase
from domain.money import Money
from dunlink.devtools.processes import (
    Process,
    ProcessGroup,
    api_command,
    beat_command,
    dunlink_executable,
    free_port,
    sandbox_command,
    worker_command,
)

SETTLE_TIMEOUT_S = 60.0
DEMO_SECRET = "demo-ipn-secret-sandbox-only"  # noqa: S105 - the demo's own sandbox vendors, never a real secret

VENDORS = f"""\
[vendors.acme]
name = "ACME Akademie"
summary_email = "inhaber@acme.example"
locale = "de"
timezone = "Europe/Berlin"
reply_to = "support@acme.example"
copecart_ipn_secret = "{DEMO_SECRET}"
replacement = "remaining_installments"
reminder_days = [3, 7]
expire_after_days = 14

[vendors.globex]
name = "Globex Courses"
summary_email = "billing@globex.example"
locale = "en"
timezone = "Europe/London"
copecart_ipn_secret = "{DEMO_SECRET}"
replacement = "single_payment"
reminder_days = [2, 5]
expire_after_days = 10
accent_colour = "#0a7d4f"

[vendors.hooli]
name = "Hooli Kurse"
summary_email = "inhaber@hooli.example"
tasks_email = "aufgaben@hooli.example"
locale = "de"
timezone = "Europe/Berlin"
copecart_ipn_secret = "{DEMO_SECRET}"
replacement = "remaining_installments"
replacement_by = "vendor"
payment_hosts = ["127.0.0.1"]
reminder_days = [3, 7]
expire_after_days = 14


[vendors.sunrise]
name = "Sunrise Studio"
summary_email = "owner@sunrise.example"
locale = "en"
timezone = "Europe/London"
platform = "digistore24"
digistore24_ipn_passphrase = "{DEMO_SECRET}"
digistore24_api_key = "demo-api-key-sandbox-only"
replacement = "remaining_installments"
reminder_days = [3, 7]
expire_after_days = 14
"""
# The vendor who makes its replacements by hand in CopeCart; the demo plays its part (phone offer, link, cancel).
BY_HAND = "hooli"
# The vendor who sells on Digistore24: a purchase whose third payment is missed, paid again through the link.
ON_DIGISTORE24 = "sunrise"
PURCHASE = "DS-4001"


@dataclass(frozen=True)
class DemoOrder:
    order_id: str
    vendor: str
    product: str
    buyer: tuple[str, str, str]
    amounts: tuple[int, ...]
    paid: int
    currency: str = "EUR"
    pays_replacement: bool = False

    @property
    def by_hand(self) -> bool:
        return self.vendor == BY_HAND

    def to_json(self, today: date) -> dict[str, Any]:
        first, last, email = self.buyer
        start = date(today.year - 1 if today.month <= self.paid else today.year,
                     (today.month - self.paid - 1) % 12 + 1, 1)
        installments = []
        for number, amount in enumerate(self.amounts, start=1):
            months = start.month - 1 + number - 1
            due = date(start.year + months // 12, months % 12 + 1, 1)
            # A vendor-made case is planned from the IPNs alone: its paid installments are paid through the
            # sandbox, so that their IPNs arrive, rather than seeded as paid.
            paid = number <= self.paid and not self.by_hand
            installments.append({"number": number, "amount": amount, "due_date": due.isoformat(),
                                 "status": "paid" if paid else "open"})
        return {"id": self.order_id, "vendor": self.vendor, "status": "active",
                "product": {"id": f"p-{self.order_id.lower()}", "name": self.product},
                "buyer": {"id": f"b-{self.order_id.lower()}", "email": email, "first_name": first, "last_name": last,
                          "country_code": "GB" if self.vendor == "globex" else "DE"},
                "currency": self.currency,
                "plan": {"kind": "installments", "frequency": "monthly", "installments": installments},
                "replaces": None}


ORDERS = (
    DemoOrder("CC-1001", "acme", "Coaching-Programm", ("Anna", "Meier", "anna@example.com"), (5000,) * 6, 2),
    DemoOrder("CC-1002", "acme", "Yoga-Jahreskurs", ("Jonas", "Becker", "jonas@example.com"), (9900,) * 12, 4,
              pays_replacement=True),
    DemoOrder("CC-1003", "acme", "Fotografie Masterclass", ("Lea", "Schulz", "lea@example.com"),
              (14900, 10000, 10000), 1),
    DemoOrder("GX-2001", "globex", "Data Science Bootcamp", ("Oliver", "Smith", "oliver@example.co.uk"),
              (29900,) * 4, 1),
    DemoOrder("GX-2002", "globex", "Public Speaking", ("Amelia", "Jones", "amelia@example.co.uk"), (4900,) * 6, 3,
              pays_replacement=True),
    DemoOrder("GX-2003", "globex", "Guitar <b>Basics</b>", ("Harry", "Brown", "harry@example.co.uk"),
              (2500,) * 10, 7),
    DemoOrder("HK-3001", BY_HAND, "Keramik-Onlinekurs", ("Mia", "Wagner", "mia@example.com"), (7900,) * 5, 2),
)
_VENDOR_COUNT = len({order.vendor for order in ORDERS}) + 1
_CASES = len(ORDERS) + 1


def _say(message: str) -> None:
    print(message, flush=True)


# What each process is, as the demo says it is up.
_ROLES = {"sandbox": "the platform's order API and payment pages", "api": "the webhook app",
          "worker": "a Celery worker, 2 processes", "beat": "wakes the relay every 2 s"}


def _process_age() -> float:
    """Seconds since this process started (interpreter start-up and imports included), so the total the demo
    prints is the wall time a user waited; 0 where /proc cannot tell."""
    try:
        stat = Path("/proc/self/stat").read_text(encoding="ascii")
        uptime = float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime; fields after ")" begin at 3
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def run_demo(*, broker_url: str | None, base: Path) -> int:
    """Run the demo in a new folder under ``base``; return the exit code."""
    started = time.monotonic() - _process_age()
    run = base.resolve() / datetime.now(UTC).strftime("run-%Y%m%d-%H%M%S-%f")
    run.mkdir(parents=True)
    (run / "vendors.toml").write_text(VENDORS, encoding="utf-8")
    database_url = f"sqlite:///{run / 'dunlink.db'}"
    upgrade(database_url)
    mail = MailCatcher(run / "mail").start()
    api_port, sandbox_port = free_port(), free_port()
    env = {**os.environ,
           "DUNLINK_DATABASE_URL": database_url,
           "DUNLINK_BROKER_URL": broker_url or f"filesystem://{run / 'broker'}",
           "DUNLINK_VENDORS_FILE": str(run / "vendors.toml"),
           "DUNLINK_PLATFORM_URL": f"http://127.0.0.1:{sandbox_port}",
           "DUNLINK_DIGISTORE24_URL": f"http://127.0.0.1:{sandbox_port}",
           "DUNLINK_PLATFORM_TOKEN": "sandbox-token",
           "DUNLINK_SMTP_URL": f"smtp://127.0.0.1:{mail.port}",
           "DUNLINK_MAIL_FROM": "dunning@dunlink.example",
           # The demo shows the buyers' side; daily vendor summaries would arrive only after 08:00.
           "DUNLINK_VENDOR_SUMMARIES": "false",
           # The vendor page of the vendor who makes links by hand: its links are signed with a key of this run.
           "DUNLINK_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
           "DUNLINK_SECRET_KEY": secrets.token_urlsafe(32)}
    _say(f"dunlink demo: working in {run}")
    _say(f"  broker: {'embedded (filesystem)' if broker_url is None else broker_url}; database: SQLite; "
         f"mail: local catcher on port {mail.port}")
    where = {"sandbox": f" on http://127.0.0.1:{sandbox_port}", "api": f" on http://127.0.0.1:{api_port}",
             "worker": "", "beat": ""}
    try:
        with ProcessGroup(env=env, log_dir=run / "logs", cwd=run) as group:
            _say(f"  starting the sandbox platform, webhook app, worker and beat (logs in {run / 'logs'}) ...")
            starting = {"sandbox": sandbox_command(sandbox_port, webhook_base=f"http://127.0.0.1:{api_port}"),
                        "api": api_command(api_port),
                        "worker": worker_command("demo", concurrency=2),
                        "beat": beat_command(run / "beat-schedule")}
            begun = time.monotonic()
            group.start_together(starting, timeout=60, on_ready=lambda name: _say(
                f"    {name:<8} up after {time.monotonic() - begun:4.1f}s: {_ROLES[name]}{where[name]}"))
            settled = _drive(f"http://127.0.0.1:{sandbox_port}", database_url, mail)
            _say("")
            _say("  stopping the sandbox platform, webhook app, worker and beat ...")
            stopping = time.monotonic()
            group.stop_together(on_stopped=lambda process: _say(_stopped(process, time.monotonic() - stopping)))
    finally:
        mail.stop()
    _where_to_look(run, mail)
    _say(f"Done in {time.monotonic() - started:.1f}s." if settled else
         f"Some cases did not settle: see the logs. Ended after {time.monotonic() - started:.1f}s.")
    return 0 if settled else 1


def _stopped(process: Process, after: float) -> str:
    if process.popen.returncode == -signal.SIGKILL:
        return f"    {process.name:<8} killed after {after:4.1f}s: it had not stopped by then"
    warm = " (a warm shutdown: the worker lets running tasks finish)" if process.name == "worker" else ""
    return f"    {process.name:<8} stopped after {after:4.1f}s{warm}"


def _drive(sandbox: str, database_url: str, mail: MailCatcher) -> bool:
    """Seed the orders, fail an installment of each, play the vendor who makes links by hand, pay two
    replacements; print the table; True if every case ended where it should."""
    today = datetime.now(UTC).date()
    with httpx.Client(base_url=sandbox, timeout=30) as client:
        for order in ORDERS:
            client.post("/sandbox/orders", json=order.to_json(today)).raise_for_status()
            if order.by_hand:
                for number in range(1, order.paid + 1):
                    client.post(f"/sandbox/orders/{order.order_id}/installments/{number}/pay").raise_for_status()
        bought = (datetime.now(UTC) - timedelta(days=65)).strftime("%Y-%m-%d %H:%M:%S")
        client.post("/sandbox/digistore24/purchases", json={
            "id": PURCHASE, "vendor": ON_DIGISTORE24, "created_at": bought,
            "product": {"id": "612345", "name": "Pottery Basics"},
            "buyer": {"email": "noah@example.co.uk", "first_name": "Noah", "last_name": "Evans", "country": "GB"},
            "currency": "EUR", "first_amount": "39.00", "other_amounts": "39.00", "number_of_installments": 5,
            "billing_interval": "1_month", "payments": 2}).raise_for_status()
        _say(f"  seeded {_CASES} installment orders for {_VENDOR_COUNT} vendors ({BY_HAND} makes its "
             f"replacements by hand in CopeCart, {ON_DIGISTORE24} sells on Digistore24); failing one installment "
             "of each ...")
        for order in ORDERS:
            delivery = client.post(f"/sandbox/orders/{order.order_id}/installments/{order.paid + 1}/fail").json()
            status = delivery["delivery"]["status"]
            _say(f"    {order.order_id}: installment {order.paid + 1} failed -> signed IPN answered {status}")
        missed = client.post(f"/sandbox/digistore24/purchases/{PURCHASE}/payments/3/missed").json()
        _say(f"    {PURCHASE}: payment 3 missed on Digistore24 -> signed IPN answered {missed['delivery']['status']}")
        waiting = ("awaiting_payment", "needs_person", "awaiting_vendor_link")
        cases = _settle(database_url, lambda c: c.state.value in waiting, "links sent or asked of the vendor")
        for order in ORDERS:
            case = cases.get(order.order_id)
            if order.by_hand and case is not None and case.state.value == "awaiting_vendor_link":
                _play_the_vendor(client, order, mail)
        cases = _settle(database_url, lambda c: c.state.value in ("awaiting_payment", "needs_person"), "links sent")
        for order in ORDERS:
            case = cases.get(order.order_id)
            if order.pays_replacement and case is not None and case.replacement_order_id:
                client.post(f"/sandbox/orders/{case.replacement_order_id}/installments/1/pay").raise_for_status()
                _say(f"    {order.order_id}: the buyer pays the replacement {case.replacement_order_id}")
        case = cases.get(PURCHASE)
        if case is not None and case.replacement_order_id:
            client.post(f"/sandbox/digistore24/buy-urls/{case.replacement_order_id}/pay").raise_for_status()
            _say(f"    {PURCHASE}: the buyer pays through the Digistore24 link {case.replacement_order_id}")
        expected = {o.order_id: ("recovered" if o.pays_replacement else "awaiting_payment") for o in ORDERS}
        expected[PURCHASE] = "recovered"
        cases = _settle(database_url, lambda c: c.state.value in (expected[c.original_order_id], "needs_person"),
                        "payments recorded")
    _table(cases, mail)
    return all(case.state.value == expected[order_id] for order_id, case in cases.items())


def _play_the_vendor(client: httpx.Client, order: DemoOrder, mail: MailCatcher) -> None:
    """What the vendor does after its task email: the phone offer in CopeCart (the sandbox here), the link pasted
    on dunlink's vendor page, the original cancelled in CopeCart (whose IPN tells dunlink)."""
    task = next((m for m in mail.messages if order.order_id in m.text and "/vendor/cases/" in m.text), None)
    found = re.search(r"http://127\.0\.0\.1:\d+/vendor/cases/[A-Za-z0-9_.-]+", task.text) if task else None
    if found is None:
        _say(f"    {order.order_id}: no task email with the vendor page arrived")
        return
    original = client.get(f"/v1/orders/{order.order_id}", headers={"Authorization": "Bearer sandbox-token"}).json()
    left = len(order.amounts) - order.paid
    offer = client.post("/sandbox/phone-offers", json={
        "vendor": order.vendor, "product_id": original["product"]["id"], "buyer": original["buyer"],
        "currency": order.currency, "plan": {"kind": "installments", "frequency": "monthly", "installments": [
            {**item, "number": number, "status": "open"}
            for number, item in enumerate(original["plan"]["installments"][-left:], start=1)]}}).json()
    page = httpx.post(found.group(0) + "/link",
                      data={"payment_url": offer["payment_url"], "order_id": offer["id"]}, timeout=30)
    client.post(f"/sandbox/orders/{order.order_id}/vendor-cancel").raise_for_status()
    _say(f"    {order.order_id}: the vendor's task email arrived; playing the vendor: phone offer {offer['id']} made, "
         f"its link pasted on the vendor page (answered {page.status_code}), the original cancelled in CopeCart")


def _where_to_look(run: Path, mail: MailCatcher) -> None:
    """Where the results are, and the lines to paste into a shell to read the cases with the ops CLI."""
    executable = dunlink_executable()
    if Path(executable).is_absolute() and Path(executable).is_relative_to(Path.cwd()):
        executable = os.path.relpath(executable)
    _say("")
    _say(f"Emails ({len(mail.messages)}): {run / 'mail'}  (.eml files, and .html to open in a browser)")
    _say(f"Database: {run / 'dunlink.db'}   Logs: {run / 'logs'}")
    _say("The payment links above are dead now: the sandbox platform that served them stopped with the demo.")
    _say("")
    _say(f"To look at these cases with the ops CLI ({executable}), paste:")
    database_url = f"sqlite:///{run / 'dunlink.db'}"
    _say(f"  export DUNLINK_DATABASE_URL={shlex.quote(database_url)}")
    _say(f"  export DUNLINK_VENDORS_FILE={shlex.quote(str(run / 'vendors.toml'))}")
    _say(f"  {shlex.quote(executable)} cases list")


def _settle(database_url: str, done: Any, what: str) -> dict[str, DunningCase]:
    engine = make_engine(database_url)
    factory = make_session_factory(engine)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    try:
        while True:
            with SqlUnitOfWork(factory) as uow:
                cases = {case.original_order_id: case for case in uow.cases.search(limit=100)}
            ready = sum(1 for case in cases.values() if done(case))
            line = f"  settling: {ready}/{_CASES} {what}"
            if sys.stdout.isatty():
                print(f"\r{line}", end="", flush=True)
            if ready == _CASES or time.monotonic() > deadline:
                print(f"\r{line}" if sys.stdout.isatty() else line, flush=True)
                return cases
            time.sleep(0.2)
    finally:
        engine.dispose()


def _table(cases: dict[str, DunningCase], mail: MailCatcher) -> None:
    locale = {"acme": "de", "globex": "en", BY_HAND: "de", ON_DIGISTORE24: "en"}
    rows = [("order", "vendor", "owed", "replacement", "payment link", "state")]
    for order_id, vendor, currency in [*((o.order_id, o.vendor, o.currency) for o in ORDERS),
                                       (PURCHASE, ON_DIGISTORE24, "EUR")]:
        case = cases.get(order_id)
        if case is None:
            rows.append((order_id, vendor, "-", "-", "-", "no case"))
            continue
        owed = case.outstanding or Money(0, currency)
        rows.append((order_id, vendor, format_money(owed, locale[vendor]),
                     case.replacement_order_id or "-", case.payment_url or "-",
                     case.state.value + (f" ({case.reason})" if case.reason else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    _say("")
    for index, row in enumerate(rows):
        _say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            _say("  ".join("-" * width for width in widths))
