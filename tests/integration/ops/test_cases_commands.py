"""``dunlink cases``: the real console script against cases stored through the repositories.

Each test runs the installed ``dunlink`` command as an operator would, on SQLite and PostgreSQL, and checks
what it prints, its exit status and the rows it leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import redis

from adapters.db.engine import make_engine, make_session_factory
from adapters.db.uow import SqlUnitOfWork
from domain.case import PAID_AFTER_CANCEL, Buyer, CaseState, DunningCase, RetryPolicy, Step
from domain.money import Money
from domain.plans import Frequency, Installment, InstallmentPlan, InstallmentStatus
from domain.policy import ReplacementKind
from tests.support.db import fresh_sqlite

DUNLINK = Path(sys.executable).parent / "dunlink"
REDIS_URL = os.environ.get("DUNLINK_TEST_REDIS_URL", "redis://127.0.0.1:6379") + "/14"
UNREACHABLE_BROKER = "redis://127.0.0.1:1/0"

T = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
BUYER = Buyer("anna.meier@example.com", "Anna", "Meier", "DE", "b-7")
WAITING, STUCK, PAID_ON_CANCELLED, CLOSED = "c0ffee0000000001", "c0ffee0000000002", "c0ffee0000000003", \
    "c0ffee0000000004"
STUCK_ERROR = "the platform refused the cancel: order CC-1002 is locked by a pending chargeback review"


def dunlink(database_url: str, *args: str, broker: str = UNREACHABLE_BROKER) -> subprocess.CompletedProcess[str]:
    return dunlink_each(database_url, list(args), broker=broker)[0]


def dunlink_each(database_url: str, *commands: list[str],
                 broker: str = UNREACHABLE_BROKER) -> list[subprocess.CompletedProcess[str]]:
    """Run ``dunlink`` once per command, side by side (each is a separate read or a refused write)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DUNLINK_")}
    env |= {"DUNLINK_DATABASE_URL": database_url, "DUNLINK_BROKER_URL": broker}
    running = [(args, subprocess.Popen([str(DUNLINK), *args], env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)) for args in commands]
    results = []
    for args, process in running:
        out, err = process.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(args, process.returncode, out, err))
    return results


def _plan() -> InstallmentPlan:
    statuses = [InstallmentStatus.PAID] * 2 + [InstallmentStatus.FAILED] + [InstallmentStatus.OPEN] * 3
    return InstallmentPlan("EUR", Frequency.MONTHLY, tuple(
        Installment(n, Money(5000, "EUR"), date(2026, 7 + n, 1) if n < 6 else date(2027, 1, 1), status)
        for n, status in enumerate(statuses, start=1)))


def _opened(case_id: str, vendor: str, order: str, at: datetime) -> DunningCase:
    case = DunningCase.open(case_id=case_id, vendor=vendor, original_order_id=order, failed_installment=3,
                            replacement_kind=ReplacementKind.REMAINING_INSTALLMENTS, now=at)
    case.plan(_plan(), order_vendor=vendor,
              order_status="active", buyer=BUYER, product_id="P-9", product_name="Yoga course",
              today=at.date(), now=at + timedelta(seconds=1))
    if case.state is CaseState.PLANNED:
        case.replacement_created(order_id=f"R-{order}", payment_url=f"https://pay.example/R-{order}",
                                 now=at + timedelta(seconds=2))
    return case


@dataclass
class Store:
    """The test's own view of the database, through the same repositories as the pipeline."""

    url: str
    uow: SqlUnitOfWork

    def case(self, case_id: str) -> DunningCase:
        with self.uow as uow:
            case = uow.cases.get(case_id)
        assert case is not None
        return case

    def event_kinds(self, case_id: str) -> list[str]:
        with self.uow as uow:
            return [event.kind for event in uow.cases.timeline(case_id)]


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """Four cases: one waiting for the buyer, one stuck on a failed step, one paid on a cancelled order, one
    closed; the waiting one with its webhook and its email."""
    engine = make_engine(database_url)
    uow = SqlUnitOfWork(make_session_factory(engine))
    with uow:
        waiting = _opened(WAITING, "acme", "CC-1001", T)
        waiting.original_cancelled(now=T + timedelta(seconds=3))
        waiting.link_sent(now=T + timedelta(seconds=5))
        uow.cases.add(waiting)
        stored = uow.inbox.add(vendor="acme", event_type="payment.failed", dedup_key="TX-1", order_id="CC-1001",
                               body="{}", now=T - timedelta(seconds=1))
        uow.inbox.mark_processed(stored.id, outcome="case_opened", case_id=WAITING, now=T)
        email = uow.emails.claim(case_id=WAITING, step="send_link", message_id="<link-1@dunlink.example>",
                                 recipient=BUYER.email, now=T + timedelta(seconds=4))
        email.status, email.sent_at, email.attempts = "sent", T + timedelta(seconds=4), 1

        stuck = _opened(STUCK, "acme", "CC-1002", T + timedelta(days=1))
        stuck.step_failed(Step.CANCEL_ORIGINAL, error="503 Service Unavailable", transient=True,
                          now=T + timedelta(days=1, seconds=3), policy=RetryPolicy(), jitter=0.0)
        stuck.step_failed(Step.CANCEL_ORIGINAL, error=STUCK_ERROR, transient=False,
                          now=T + timedelta(days=1, seconds=9), policy=RetryPolicy(), jitter=0.0)
        uow.cases.add(stuck)

        paid = _opened(PAID_ON_CANCELLED, "beta", "CC-2001", T + timedelta(days=2))
        paid.original_cancelled(now=T + timedelta(days=2, seconds=3))
        paid.link_sent(now=T + timedelta(days=2, seconds=4))
        paid.original_paid(installment=3, now=T + timedelta(days=2, hours=1))
        uow.cases.add(paid)

        closed = DunningCase.open(case_id=CLOSED, vendor="beta", original_order_id="CC-2002", failed_installment=1,
                                  replacement_kind=ReplacementKind.SINGLE_PAYMENT, now=T - timedelta(days=11))
        closed.resolve(note="customer paid by bank transfer", now=T - timedelta(days=10))
        uow.cases.add(closed)
        uow.commit()
    yield Store(database_url, uow)
    engine.dispose()


# -- list -----------------------------------------------------------------------------------------------------


def test_list_shows_cases_newest_first_with_owed_amounts_and_short_reasons(store: Store) -> None:
    result = dunlink(store.url, "cases", "list")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "VENDOR", "ORIGINAL", "STATE", "OWED", "REPLACEMENT", "OPENED", "(UTC)",
                                "REASON"]
    rows = lines[2:-1]
    assert [row.split()[0] for row in rows] == [PAID_ON_CANCELLED, STUCK, WAITING, CLOSED]
    stuck = rows[1]
    assert stuck.split()[1:5] == ["acme", "CC-1002", "needs_person", "200.00"]
    assert "EUR" in stuck and "R-CC-1002" in stuck and "2026-10-02 08:00" in stuck
    assert "cancel_original failed: the platform refused" in stuck and stuck.endswith("…")
    assert STUCK_ERROR not in stuck
    assert rows[3].split()[1:5] == ["beta", "CC-2002", "resolved", "-"]
    assert lines[-1] == "4 cases"


def test_list_filters_by_state_vendor_and_since(store: Store) -> None:
    needs_person, beta_since, since_time, nothing = dunlink_each(
        store.url,
        ["cases", "list", "--state", "needs_person", "--json"],
        ["cases", "list", "--vendor", "beta", "--since", "2026-09-25"],
        ["cases", "list", "--since", "2026-10-02T10:00:00+02:00", "--limit", "1"],
        ["cases", "list", "--state", "lost"])

    assert needs_person.returncode == 0, needs_person.stderr
    listed = json.loads(needs_person.stdout)
    assert [(case["id"], case["outstanding"], case["currency"]) for case in listed] == [
        (PAID_ON_CANCELLED, "200.00", "EUR"), (STUCK, "200.00", "EUR")]
    assert listed[0]["reason"] == PAID_AFTER_CANCEL
    assert [row.split()[0] for row in beta_since.stdout.splitlines()[2:-1]] == [PAID_ON_CANCELLED]
    assert [row.split()[0] for row in since_time.stdout.splitlines()[2:-1]] == [PAID_ON_CANCELLED]
    assert since_time.stdout.splitlines()[-1] == "1 case (the newest 1; --limit shows more)"
    assert (nothing.returncode, nothing.stdout) == (0, "no cases match\n")


def test_list_of_an_empty_database_says_so(tmp_path: Path) -> None:
    result = dunlink(fresh_sqlite(tmp_path), "cases", "list")

    assert (result.returncode, result.stdout) == (0, "no cases yet\n")


def test_bad_arguments_are_refused_with_what_is_expected(tmp_path: Path) -> None:
    state, since, limit, no_note = dunlink_each(
        fresh_sqlite(tmp_path),
        ["cases", "list", "--state", "stuck"], ["cases", "list", "--since", "last tuesday"],
        ["cases", "list", "--limit", "0"], ["cases", "resolve", STUCK])

    assert state.returncode == 2
    assert "unknown state 'stuck'; valid states: open, planned," in state.stderr
    assert "needs_person" in state.stderr and "awaiting_payment" in state.stderr
    assert since.returncode == 2 and "not an ISO-8601 date or datetime: 'last tuesday'" in since.stderr
    assert limit.returncode == 2 and "--limit: must be a whole number above 0" in limit.stderr
    assert no_note.returncode == 2 and "the following arguments are required: --note" in no_note.stderr


def test_a_missing_or_empty_database_is_named_with_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "elsewhere" / "dunlink.db"
    (tmp_path / "empty.db").touch()
    absent = dunlink(f"sqlite:///{missing}", "cases", "list")
    empty = dunlink(f"sqlite:///{tmp_path / 'empty.db'}", "cases", "list")

    assert (absent.returncode, absent.stderr) == (
        2, f"dunlink: no database at {missing}: set DUNLINK_DATABASE_URL to the one dunlink uses\n")
    assert not missing.parent.exists()
    assert empty.returncode == 1
    assert "no such table: cases" in empty.stderr and "dunlink db upgrade" in empty.stderr


# -- show -----------------------------------------------------------------------------------------------------


def test_show_prints_the_case_and_its_timeline_in_order_with_the_email_masked(store: Store) -> None:
    result = dunlink(store.url, "cases", "show", WAITING)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert BUYER.email not in out
    assert "Anna Meier <a***@example.com>" in out
    for expected in ("vendor          acme", "CC-1001 (installment 3 failed)",
                     "R-CC-1001 (remaining_installments)", "owed            200.00 EUR",
                     "1. 50.00 EUR due 2026-10-01 (open)", "4. 50.00 EUR due 2027-01-01 (open)",
                     "payment link    https://pay.example/R-CC-1001", "state           awaiting_payment"):
        assert expected in out
    timeline = out.split("timeline (UTC)\n", 1)[1].splitlines()
    assert [line.split()[2:4] for line in timeline] == [
        ["webhook", "payment.failed"], ["case", "opened"], ["case", "planned"], ["case", "replacement_created"],
        ["case", "original_cancelled"], ["email", "send_link"], ["case", "link_sent"]]
    assert "outcome=case_opened" in timeline[0]
    assert "outstanding=200.00 EUR" in timeline[2]
    assert "message_id=<link-1@dunlink.example>" in timeline[5] and "status=sent" in timeline[5]
    assert "to=a***@example.com" in timeline[5]


def test_show_of_a_stuck_case_gives_the_errors_and_how_to_retry(store: Store) -> None:
    result, as_json = dunlink_each(store.url, ["cases", "show", STUCK], ["cases", "show", STUCK, "--json"])

    assert result.returncode == 0, result.stderr
    assert f"reason          cancel_original failed: {STUCK_ERROR}" in result.stdout
    assert "reason code     cancel_original_failed  attempts=2" in result.stdout
    assert f"'dunlink cases retry {STUCK}'" in result.stdout
    retry_line = next(line for line in result.stdout.splitlines() if "step_retry" in line)
    assert "step=cancel_original" in retry_line and "error=503 Service Unavailable" in retry_line
    handed = next(line for line in result.stdout.splitlines() if " needs_person " in line)
    assert STUCK_ERROR in handed
    document = json.loads(as_json.stdout)
    assert document["state"] == "needs_person" and document["failed_step"] == "cancel_original"
    assert (document["reason_code"], document["reason_params"]) == ("cancel_original_failed", {"attempts": 2})
    assert [line["what"] for line in document["timeline"]][-2:] == ["step_retry", "needs_person"]
    assert BUYER.email not in as_json.stdout


def test_show_of_a_recovered_case_shows_the_installments_the_buyer_paid(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with SqlUnitOfWork(make_session_factory(engine)) as uow:
            case = _opened("c0ffee0000000009", "acme", "CC-3001", T)  # four installments of 50.00 left
            case.original_cancelled(now=T + timedelta(seconds=3))
            case.link_sent(now=T + timedelta(seconds=4))
            case.replacement_paid(amount=Money(5000, "EUR"), now=T + timedelta(days=1))
            case.replacement_paid(amount=Money(7500, "EUR"), now=T + timedelta(days=31))
            uow.cases.add(case)
            uow.commit()
    finally:
        engine.dispose()

    result = dunlink(database_url, "cases", "show", "c0ffee0000000009")

    assert result.returncode == 0, result.stderr
    for expected in ("recovered       125.00 EUR", "state           recovered",
                     "1. 50.00 EUR due 2026-10-01 (paid)", "2. 50.00 EUR due 2026-11-01 (paid)",
                     "3. 50.00 EUR due 2026-12-01 (partly paid: 25.00 EUR)", "4. 50.00 EUR due 2027-01-01 (open)"):
        assert expected in result.stdout, result.stdout


def test_unknown_ids_are_refused_by_every_command(tmp_path: Path) -> None:
    results = dunlink_each(fresh_sqlite(tmp_path), ["cases", "show", "nosuchcase"],
                           ["cases", "retry", "nosuchcase"], ["cases", "resolve", "nosuchcase", "--note", "n/a"])
    for result in results:
        assert (result.returncode, result.stderr, result.stdout) == (2, "dunlink: no case nosuchcase\n", ""), \
            result.args


def test_a_unique_start_of_an_id_names_the_case_for_every_command(store: Store) -> None:
    """Operators copy the first characters of an id; an ambiguous start names the candidates, no match says so."""
    case_id = "7447fd7e1a2b3c4d"
    with store.uow as uow:
        stuck = _opened(case_id, "acme", "CC-1009", T + timedelta(days=3))
        stuck.step_failed(Step.CANCEL_ORIGINAL, error=STUCK_ERROR, transient=False,
                          now=T + timedelta(days=3, seconds=9), policy=RetryPolicy(), jitter=0.0)
        uow.cases.add(stuck)
        uow.commit()

    show, ambiguous, wildcard, none = dunlink_each(store.url, ["cases", "show", "7447fd7e"],
                                                   ["cases", "show", "c0ffee"], ["cases", "show", "c0ffee%"],
                                                   ["cases", "show", "7448"])
    assert show.returncode == 0, show.stderr
    assert show.stdout.splitlines()[0] == f"case {case_id}"
    assert (ambiguous.returncode, ambiguous.stdout) == (2, "")
    assert ambiguous.stderr == (f"dunlink: case id c0ffee is ambiguous: it starts {WAITING}, {STUCK}, "
                                f"{PAID_ON_CANCELLED}, {CLOSED}; give more of the id\n")
    assert (wildcard.returncode, wildcard.stderr) == (2, "dunlink: no case c0ffee%\n")
    assert (none.returncode, none.stderr) == (2, "dunlink: no case 7448\n")

    retried = dunlink(store.url, "cases", "retry", "7447")
    assert retried.returncode == 0, retried.stderr
    assert f"case {case_id} is replacement_created again" in retried.stdout
    resolved, still_ambiguous = dunlink_each(store.url, ["cases", "resolve", "7447f", "--note", "settled by phone"],
                                             ["cases", "retry", "c0ffee00"])
    assert resolved.returncode == 0, resolved.stderr
    assert f"case {case_id} is resolved" in resolved.stdout
    assert store.case(case_id).state is CaseState.RESOLVED
    assert (still_ambiguous.returncode, still_ambiguous.stderr.count("\n")) == (2, 1)
    assert "is ambiguous" in still_ambiguous.stderr
    assert store.case(STUCK).state is CaseState.NEEDS_PERSON


# -- retry ----------------------------------------------------------------------------------------------------


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def test_retry_makes_the_case_due_again_and_wakes_a_worker(store: Store, broker: redis.Redis) -> None:
    result = dunlink(store.url, "cases", "retry", STUCK, broker=REDIS_URL)

    assert result.returncode == 0, result.stderr
    assert f"case {STUCK} is replacement_created again; next step cancel_original" in result.stdout
    assert "woken" in result.stdout
    case = store.case(STUCK)
    assert case.state is CaseState.REPLACEMENT_CREATED
    assert (case.reason, case.failed_step, case.attempts) == (None, None, 0)
    assert case.next_attempt_at is not None and case.next_attempt_at <= datetime.now(UTC)
    assert store.event_kinds(STUCK)[-1] == "retry_requested"
    assert broker.llen("dunlink.platform") == 1
    message = json.loads(broker.lindex("dunlink.platform", 0))  # type: ignore[arg-type]
    assert message["headers"]["task"] == "dunlink.advance_case"
    assert STUCK in message["headers"]["argsrepr"]


def test_retry_with_the_broker_down_leaves_the_case_due_for_the_relay(store: Store) -> None:
    result = dunlink(store.url, "cases", "retry", STUCK, broker=UNREACHABLE_BROKER)

    assert result.returncode == 0, result.stderr
    assert "could not be reached" in result.stdout and "the relay will pick the case up" in result.stdout
    case = store.case(STUCK)
    assert case.state is CaseState.REPLACEMENT_CREATED
    assert case.is_due(datetime.now(UTC))


def test_retry_is_refused_where_there_is_no_failed_step(store: Store) -> None:
    waiting, paid = dunlink_each(store.url, ["cases", "retry", WAITING], ["cases", "retry", PAID_ON_CANCELLED])

    assert (waiting.returncode, waiting.stderr) == (
        2, f"dunlink: case {WAITING} is awaiting_payment, not needs_person\n")
    assert (paid.returncode, paid.stderr) == (
        2, f"dunlink: case {PAID_ON_CANCELLED} has no failed step to retry: {PAID_AFTER_CANCEL}\n")
    assert store.case(PAID_ON_CANCELLED).state is CaseState.NEEDS_PERSON
    assert store.event_kinds(WAITING)[-1] == "link_sent"


# -- resolve --------------------------------------------------------------------------------------------------


def test_resolve_closes_the_case_with_the_note_once(store: Store) -> None:
    resolved = dunlink(store.url, "cases", "resolve", PAID_ON_CANCELLED, "--note", "refunded the original")
    again = dunlink(store.url, "cases", "resolve", PAID_ON_CANCELLED, "--note", "twice")
    blank = dunlink(store.url, "cases", "resolve", STUCK, "--note", "  ")

    assert resolved.returncode == 0, resolved.stderr
    assert f"case {PAID_ON_CANCELLED} is resolved" in resolved.stdout
    case = store.case(PAID_ON_CANCELLED)
    assert case.state is CaseState.RESOLVED and case.closed_at is not None and case.reason is None
    with store.uow as uow:
        last = uow.cases.timeline(PAID_ON_CANCELLED)[-1]
    assert (last.kind, last.detail) == ("resolved_by_hand", {"note": "refunded the original"})
    assert (again.returncode, again.stderr) == (2, f"dunlink: case {PAID_ON_CANCELLED} is already resolved\n")
    assert (blank.returncode, blank.stderr) == (2, "dunlink: a note is required to resolve a case by hand\n")
    assert store.case(STUCK).state is CaseState.NEEDS_PERSON


# -- help -----------------------------------------------------------------------------------------------------


def test_every_cases_command_answers_help(tmp_path: Path) -> None:
    expected = {"cases": "needs_person", "cases list": "--since", "cases show": "timeline",
                "cases retry": "relay", "cases resolve": "--note"}
    results = dunlink_each(f"sqlite:///{tmp_path / 'unused.db'}",
                           *[[*command.split(), "--help"] for command in expected])
    for (command, words), result in zip(expected.items(), results, strict=True):
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: dunlink {command} ") and words in result.stdout
    assert not (tmp_path / "unused.db").exists()
