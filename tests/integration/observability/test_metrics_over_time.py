"""``/metrics`` as an operator watches it over time, on SQLite and PostgreSQL.

An api process counts the database's figures in full at its first scrape and then adds only what was written
since: after more work the counters are the earlier values plus that work, cases move between the gauges of
their states, and a restarted api (or a second one) shows the same figures as the one that kept counting.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, event, text

from adapters.db.figures import LATE_SEND_GRACE
from adapters.db.uow import SqlUnitOfWork
from adapters.email.memory import MemoryMailSender
from adapters.email.port import PermanentMailError, TransientMailError
from adapters.platform.errors import PlatformUnavailable
from adapters.platform.memory import InMemoryPlatform
from adapters.platform.port import Order
from domain.case import DunningCase
from domain.policy import ReplacementKind
from dunlink.config.settings import Settings
from dunlink.runtime.bootstrap import Services, build_services
from dunlink.sandbox.ipn import build_ipn
from dunlink.usecases.pipeline import advance_case, handle_event, relay, send_email
from dunlink.webapp.app import create_app
from platforms.copecart.webhook import SIGNATURE_HEADER, signature
from tests.support import db
from tests.support.stack import OPS_HEADERS, OPS_TOKEN, SECRET, VENDORS, order_json

Sample = tuple[str, frozenset[tuple[str, str]]]
START = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Installation:
    """The database, the platform and the mail server, and the api processes started against them."""

    settings: Settings
    platform: InMemoryPlatform = field(default_factory=InMemoryPlatform)
    mail: MemoryMailSender = field(default_factory=MemoryMailSender)
    clock: Clock = field(default_factory=Clock)
    stored: list[int] = field(default_factory=list)  # inbox ids published by the webhook
    processes: ExitStack = field(default_factory=ExitStack)

    def __enter__(self) -> Installation:
        return self

    def __exit__(self, *_: object) -> None:
        self.processes.close()

    def services(self) -> Services:
        def enqueue(task: str, args: list[object], _queue: str) -> None:
            if task == "dunlink.process_event":
                self.stored.append(int(str(args[0])))

        built = build_services(self.settings, enqueue=enqueue)
        self.processes.callback(built.engine.dispose)
        return dataclasses.replace(built, platform=self.platform, mail=self.mail, clock=self.clock)

    def start_api(self) -> TestClient:
        """A new api process: its own services, app and collector."""
        return self.processes.enter_context(TestClient(create_app(self.services()), headers=OPS_HEADERS))

    # -- what happens on the platform, and what the workers do about it ---------------------------------

    def fail(self, order_id: str, worker: Services) -> str:
        """Installment 3 of a new order fails; the workers take the case as far as it goes. Its id."""
        order = Order.from_json(order_json(order_id, email=f"{order_id.lower()}@example.com"))
        self.platform.seed(order)
        event_id = self._deliver(order, 3, "fail", worker)
        outcome = handle_event(worker, event_id)
        assert outcome.case_id is not None, outcome
        self.work(outcome.case_id, worker)
        return outcome.case_id

    def pay(self, case_id: str, number: int, worker: Services) -> int:
        """The buyer pays installment ``number`` of the case's replacement; the amount paid."""
        replacement = self.platform.order(self._case(case_id, worker).replacement_order_id or "")
        self.platform.set_installment_status(replacement.id, number, "paid")
        handle_event(worker, self._deliver(self.platform.order(replacement.id), number, "pay", worker))
        return replacement.plan.installments[number - 1].amount

    def work(self, case_id: str, worker: Services) -> None:
        """Every step that is due now, as the workers would run them."""
        for _ in range(20):
            case = self._case(case_id, worker)
            step = case.next_step
            if step is None or not case.is_due(self.clock()):
                return
            send_email(worker, case_id) if step.is_email else advance_case(worker, case_id)
        raise AssertionError(f"case {case_id} never settled")

    def _case(self, case_id: str, worker: Services) -> DunningCase:
        with worker.uow() as uow:
            case = uow.cases.get(case_id)
        assert case is not None
        return case

    def _deliver(self, order: Order, number: int, action: str, worker: Services) -> int:
        payload = build_ipn(order, number, action=action, transaction_id=f"T-{order.id}-{number}-{action}",
                            ordered_at=START, now=self.clock())
        body = json.dumps(payload).encode()
        with TestClient(create_app(worker)) as webhook:
            answer = webhook.post(f"/webhooks/copecart/{order.vendor}", content=body,
                                  headers={SIGNATURE_HEADER: signature(SECRET, body)})
        assert (answer.status_code, answer.text) == (200, "OK")
        return self.stored[-1]


@pytest.fixture
def installation(database_url: str, tmp_path: Path) -> Iterator[Installation]:
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(VENDORS.format(secret=SECRET), encoding="utf-8")
    settings = Settings(database_url=database_url, vendors_file=vendors, mail_from="dunning@dunlink.example",
                        ops_token=OPS_TOKEN)
    with Installation(settings) as installed:
        yield installed


def scrape(api: TestClient) -> dict[Sample, float]:
    """The database's figures of one scrape (not the api's own webhook counters, which are per process)."""
    response = api.get("/metrics")
    assert response.status_code == 200
    figures = {(sample.name, frozenset(sample.labels.items())): sample.value
               for family in text_string_to_metric_families(response.text) for sample in family.samples
               if not family.name.startswith("dunlink_webhook")}
    assert figures[("dunlink_database_up", frozenset())] == 1
    return figures


def changes(before: dict[Sample, float], after: dict[Sample, float]) -> dict[str, float]:
    """What moved between two scrapes, as ``name{label=value}`` -> difference (histogram aside)."""
    moved = {}
    for key in before.keys() | after.keys():
        name, labels = key
        difference = after.get(key, 0) - before.get(key, 0)
        if difference and not name.startswith("dunlink_ipn_to_email"):
            moved[name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels)) + "}"] = difference
    return moved


PLATFORM_STEPS_OK = {f"dunlink_platform_calls_total{{outcome=ok,step={step}}}": 1
                     for step in ("fetch_original", "create_replacement", "cancel_original")}


def test_counters_after_more_work_are_the_earlier_values_plus_the_new_work(installation: Installation) -> None:
    api = installation.start_api()
    worker = installation.services()
    empty = scrape(api)
    assert changes({}, empty) == {"dunlink_database_up{}": 1}

    installation.fail("CC-1", worker)
    installation.fail("CC-2", worker)
    two = scrape(api)
    assert changes(empty, two) == {"dunlink_cases{state=awaiting_payment}": 2, "dunlink_emails_total{outcome=sent}": 2,
                                   **{name: 2 for name in PLATFORM_STEPS_OK}}

    installation.platform.fail_next(PlatformUnavailable("503 from the platform"))
    case_id = installation.fail("CC-3", worker)
    retrying = scrape(api)
    assert changes(two, retrying) == {
        "dunlink_cases{state=open}": 1,
        "dunlink_platform_calls_total{outcome=retry,step=fetch_original}": 1}

    installation.clock.now += timedelta(minutes=1)
    installation.work(case_id, worker)
    three = scrape(api)
    assert changes(retrying, three) == {"dunlink_cases{state=open}": -1, "dunlink_cases{state=awaiting_payment}": 1,
                                        "dunlink_emails_total{outcome=sent}": 1, **PLATFORM_STEPS_OK}
    assert scrape(installation.start_api()) == three, "a full count shows the same"


def test_a_restarted_api_and_a_second_one_show_the_same_figures_and_count_on(installation: Installation) -> None:
    first = installation.start_api()
    worker = installation.services()
    case_id = installation.fail("CC-1", worker)
    before_restart = scrape(first)

    restarted = installation.start_api()
    assert scrape(restarted) == before_restart

    paid = installation.pay(case_id, 1, worker)
    installation.fail("CC-2", worker)
    expected = {"dunlink_cases{state=recovered}": 1, "dunlink_recovered_minor_units_total{currency=EUR}": paid,
                "dunlink_emails_total{outcome=sent}": 1, **PLATFORM_STEPS_OK}
    assert changes(before_restart, scrape(restarted)) == expected
    assert changes(before_restart, scrape(first)) == expected


def test_cases_move_from_open_states_to_closed_ones_and_back(installation: Installation) -> None:
    api = installation.start_api()
    worker = installation.services()
    paying = installation.fail("CC-1", worker)
    silent = installation.fail("CC-2", worker)
    waiting = scrape(api)
    assert waiting[("dunlink_cases", frozenset({("state", "awaiting_payment")}))] == 2

    first_payment = installation.pay(paying, 1, worker)
    recovered = scrape(api)
    assert changes(waiting, recovered) == {
        "dunlink_cases{state=awaiting_payment}": -1, "dunlink_cases{state=recovered}": 1,
        "dunlink_recovered_minor_units_total{currency=EUR}": first_payment}

    second_payment = installation.pay(paying, 2, worker)
    paid_again = scrape(api)
    assert changes(recovered, paid_again) == {"dunlink_recovered_minor_units_total{currency=EUR}": second_payment}

    installation.clock.now += timedelta(days=15)  # two reminders, the final notice, then the deadline
    installation.work(silent, worker)
    lost = scrape(api)
    assert changes(paid_again, lost) == {
        "dunlink_cases{state=awaiting_payment}": -1, "dunlink_cases{state=lost}": 1,
        "dunlink_emails_total{outcome=sent}": 3, "dunlink_platform_calls_total{outcome=ok,step=expire}": 1}

    installation.pay(silent, 1, worker)  # after the deadline: a person reconciles it
    late = scrape(api)
    assert changes(lost, late) == {"dunlink_cases{state=lost}": -1, "dunlink_cases{state=needs_person}": 1}
    assert scrape(installation.start_api()) == late


def test_an_email_that_failed_and_then_went_out_counts_once_as_failed_and_once_as_sent(
        installation: Installation) -> None:
    api = installation.start_api()
    worker = installation.services()
    before = scrape(api)
    installation.mail.fail_next(TransientMailError("421 try again later"))
    case_id = installation.fail("CC-1", worker)
    failed = scrape(api)
    assert changes(before, failed) == {"dunlink_cases{state=original_cancelled}": 1,
                                       "dunlink_emails_total{outcome=failed}": 1, **PLATFORM_STEPS_OK}

    installation.clock.now += timedelta(minutes=1)
    installation.work(case_id, worker)
    sent = scrape(api)
    assert changes(failed, sent) == {"dunlink_cases{state=original_cancelled}": -1,
                                     "dunlink_cases{state=awaiting_payment}": 1,
                                     "dunlink_emails_total{outcome=sent}": 1}
    assert scrape(installation.start_api()) == sent


def histogram(figures: dict[Sample, float]) -> dict[str, float]:
    """``dunlink_ipn_to_email_seconds``: the non-empty cumulative buckets, the count and the sum."""
    shown = {f"le={dict(labels)['le']}": value for (name, labels), value in figures.items()
             if name == "dunlink_ipn_to_email_seconds_bucket" and value}
    return {**shown, "count": figures[("dunlink_ipn_to_email_seconds_gcount", frozenset())],
            "sum": figures[("dunlink_ipn_to_email_seconds_gsum", frozenset())]}


def test_the_time_from_ipn_to_email_is_shown_for_the_last_24_hours(installation: Installation) -> None:
    api = installation.start_api()
    worker = installation.services()
    assert histogram(scrape(api)) == {"count": 0, "sum": 0}

    installation.platform.fail_next(PlatformUnavailable("503 from the platform"))
    slow = installation.fail("CC-1", worker)
    installation.clock.now += timedelta(seconds=90)
    installation.work(slow, worker)
    assert histogram(scrape(api)) == {**{f"le={le}": 1 for le in ("120.0", "300.0", "900.0", "1800.0", "3600.0",
                                                                  "14400.0", "86400.0", "+Inf")},
                                      "count": 1, "sum": 90}

    installation.clock.now += timedelta(hours=12)
    installation.fail("CC-2", worker)  # sent in the same second as its IPN arrived
    both = histogram(scrape(api))
    assert (both["le=1.0"], both["le=120.0"], both["count"], both["sum"]) == (1, 2, 2, 90)

    installation.clock.now += timedelta(hours=12, seconds=30)  # the first email is now 24 h old
    one = scrape(api)
    assert histogram(one) == {**{f"le={le}": 1 for le in ("1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "120.0",
                                                          "300.0", "900.0", "1800.0", "3600.0", "14400.0",
                                                          "86400.0", "+Inf")}, "count": 1, "sum": 0}
    assert scrape(installation.start_api()) == one


def test_an_event_the_relay_published_again_counts_once(installation: Installation) -> None:
    api = installation.start_api()
    worker = installation.services()
    order = Order.from_json(order_json("CC-1"))
    installation.platform.seed(order)
    event_id = installation._deliver(order, 3, "fail", worker)  # its wake-up is lost: no worker takes it
    before = scrape(api)

    installation.clock.now += timedelta(minutes=1)
    assert relay(worker).events == 1
    assert changes(before, scrape(api)) == {"dunlink_relay_requeued_events_total{}": 1}

    installation.clock.now += timedelta(minutes=1)
    assert relay(worker).events == 1  # still not taken: published once more, still one event
    handle_event(worker, event_id)
    assert changes(before, scrape(api)) == {"dunlink_relay_requeued_events_total{}": 1,
                                            "dunlink_cases{state=open}": 1}


def test_work_written_by_an_older_version_is_counted_by_counting_again(installation: Installation) -> None:
    api = installation.start_api()
    worker = installation.services()
    case_id = installation.fail("CC-1", worker)
    before = scrape(api)
    with worker.engine.begin() as connection:  # a worker not yet upgraded resolves the case by hand
        connection.execute(text("UPDATE cases SET state = 'resolved' WHERE id = :id"), {"id": case_id})
        connection.execute(text("INSERT INTO case_events (case_id, at, kind, detail) "
                                "VALUES (:id, :at, 'resolved_by_hand', '{}')"), {"id": case_id, "at": START})

    assert scrape(api) == before, "the scrape that finds it shows the figures as they were"
    assert changes(before, scrape(api)) == {"dunlink_cases{state=awaiting_payment}": -1,
                                            "dunlink_cases{state=resolved}": 1}


def test_work_committed_after_later_work_is_counted_when_it_commits(postgres_url: str, tmp_path: Path) -> None:
    """On PostgreSQL a transaction can commit after one that took later ids: a scrape in between must not skip
    its rows for good, nor count the ids of one that rolled back."""
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(VENDORS.format(secret=SECRET), encoding="utf-8")
    with Installation(Settings(database_url=postgres_url, vendors_file=vendors, ops_token=OPS_TOKEN)) as installation:
        api = installation.start_api()
        worker = installation.services()
        case_id = installation.fail("CC-1", worker)
        before = scrape(api)

        def in_flight(write: Callable[[SqlUnitOfWork], object]) -> SqlUnitOfWork:
            """A transaction that wrote (and so took its ids) and has not committed yet."""
            uow = installation.processes.enter_context(worker.uow())
            write(uow)
            uow.session.flush()
            return uow

        late_case = in_flight(lambda uow: uow.cases.add(DunningCase.open(
            case_id="late", vendor="acme", original_order_id="CC-LATE", failed_installment=3,
            replacement_kind=ReplacementKind.SINGLE_PAYMENT, now=START)))
        late_event = in_flight(lambda uow: uow.inbox.add(
            vendor="acme", event_type="payment.failed", dedup_key="late", order_id="CC-9", body="{}", now=START))
        late_email = in_flight(lambda uow: uow.emails.record_attempt(
            case_id=case_id, step="reminder_1", message_id="<late@dunlink.example>", recipient="a@example.com",
            now=START))
        never = in_flight(lambda uow: uow.cases.add(DunningCase.open(
            case_id="never", vendor="acme", original_order_id="CC-NEVER", failed_installment=3,
            replacement_kind=ReplacementKind.SINGLE_PAYMENT, now=START)))
        installation.fail("CC-2", worker)  # later ids, committed first

        between = scrape(api)
        assert changes(before, between) == {"dunlink_cases{state=awaiting_payment}": 1,
                                            "dunlink_emails_total{outcome=sent}": 1, **PLATFORM_STEPS_OK}
        started_meanwhile = installation.start_api()  # its full count, too, runs while they are in flight
        assert scrape(started_meanwhile) == between
        for uow in (late_case, late_event, late_email):
            uow.commit()
        never.rollback()
        with worker.uow() as uow:
            uow.emails.mark_sent(case_id, "reminder_1", now=START)
            uow.commit()
        installation.clock.now += timedelta(minutes=1)
        assert relay(worker).events == 1  # the late webhook event, never taken by a worker

        after = scrape(api)
        assert changes(between, after) == {"dunlink_cases{state=open}": 1, "dunlink_emails_total{outcome=sent}": 1,
                                           "dunlink_relay_requeued_events_total{}": 1}
        assert scrape(started_meanwhile) == after
        assert scrape(installation.start_api()) == after


@contextmanager
def statements_sent() -> Iterator[list[str]]:
    """The SQL statements every engine of this process sends to its database meanwhile."""
    sent: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def resolve_by_hand(case_id: str, worker: Services, now: datetime) -> None:
    with worker.uow() as uow:
        case = uow.cases.get(case_id)
        assert case is not None
        case.resolve(note="settled with the buyer on the phone", now=now)
        uow.cases.save(case)
        uow.commit()


def test_an_email_left_sending_on_a_case_closed_long_ago_is_no_longer_read_again(installation: Installation) -> None:
    """A send refused for good leaves its email ``sending`` and the case to a person, who may close it: a
    scrape stops looking at that email once no send of it can still be under way."""
    api = installation.start_api()
    worker = installation.services()
    installation.mail.fail_next(PermanentMailError("550 5.1.1 mailbox unavailable"))
    case_id = installation.fail("CC-1", worker)
    resolve_by_hand(case_id, worker, installation.clock())
    closed = scrape(api)
    assert closed[("dunlink_cases", frozenset({("state", "resolved")}))] == 1
    assert closed[("dunlink_emails_total", frozenset({("outcome", "failed")}))] == 1

    installation.clock.now += LATE_SEND_GRACE + timedelta(minutes=1)
    assert scrape(api) == closed
    with statements_sent() as sent:
        assert scrape(api) == closed
    from_emails = [statement for statement in sent if "FROM emails" in statement]
    assert from_emails, "a scrape still reads the emails written since the last"
    assert [statement for statement in from_emails if "emails.id IN" in statement] == []
    assert scrape(installation.start_api()) == closed


def test_an_email_that_goes_out_as_its_case_closes_counts_as_sent(installation: Installation) -> None:
    """The send outlasts the lease: meanwhile the buyer pays and the case closes, then the email is marked sent
    (``send_email`` marks it whatever the case's state by then)."""
    api = installation.start_api()
    worker = installation.services()
    installation.mail.fail_next(TransientMailError("421 try again later"))
    case_id = installation.fail("CC-1", worker)
    seen: dict[str, dict[Sample, float]] = {}

    class SlowServer(MemoryMailSender):
        def send(self, message: EmailMessage) -> None:
            installation.clock.now += worker.lease + timedelta(seconds=1)
            installation.pay(case_id, 1, worker)
            installation.clock.now += timedelta(seconds=15)  # the next scrape
            seen["closed"] = scrape(api)
            super().send(message)

    worker.mail = SlowServer()
    installation.clock.now += timedelta(minutes=1)
    installation.work(case_id, worker)
    assert seen["closed"][("dunlink_cases", frozenset({("state", "recovered")}))] == 1
    after = scrape(api)
    assert changes(seen["closed"], after) == {"dunlink_emails_total{outcome=sent}": 1}
    assert scrape(installation.start_api()) == after


# Delivered again and again: the first copy is stored, each of the others takes an id from the sequence as it
# is turned away, and that id never shows up.
_DUPLICATES = text("INSERT INTO inbox_events (vendor, event_type, dedup_key, order_id, body, received_at) "
                   "SELECT 'acme', 'payment.failed', :key, 'CC-9', '{}', :at FROM generate_series(1, 9000) "
                   "ON CONFLICT DO NOTHING")


def test_ids_burnt_while_a_session_sits_in_a_transaction_do_not_stop_the_scrapes(
        postgres_url: str, tmp_path: Path, logged: Callable[[], list[dict[str, object]]]) -> None:
    """While any transaction that was running when an id went missing is open, the id may still show up. A
    psql session left in a transaction keeps every id burnt meanwhile in doubt: once there are too many to
    ask for, the scrapes count in full instead, with the right figures, and say so once."""
    vendors = tmp_path / "vendors.toml"
    vendors.write_text(VENDORS.format(secret=SECRET), encoding="utf-8")
    with Installation(Settings(database_url=postgres_url, vendors_file=vendors, ops_token=OPS_TOKEN)) as installation, \
            psycopg.connect(db._conninfo(postgres_url), connect_timeout=5) as left_open:
        api = installation.start_api()
        worker = installation.services()
        before = scrape(api)
        left_open.execute("SELECT pg_current_xact_id()")  # in a transaction that has an id, never ended

        with worker.engine.begin() as connection:
            for delivery in range(9):  # 9 x 8,999 ids burnt, more than a statement can take as parameters
                connection.execute(_DUPLICATES, {"key": f"T-again-{delivery}", "at": START})
        installation.fail("CC-1", worker)
        expected = {"dunlink_cases{state=awaiting_payment}": 1, "dunlink_emails_total{outcome=sent}": 1,
                    **PLATFORM_STEPS_OK}
        for _ in range(3):
            assert changes(before, scrape(api)) == expected
        warnings = [line for line in logged() if line["event"] == "metrics_missing_ids_untracked"]
        assert len(warnings) == 1, warnings
        assert warnings[0]["level"] == "warning"

        left_open.rollback()
        assert changes(before, scrape(api)) == expected
        counted_so_far = len(logged())
        installation.fail("CC-2", worker)
        assert changes(before, scrape(api)) == {**expected, "dunlink_cases{state=awaiting_payment}": 2,
                                                "dunlink_emails_total{outcome=sent}": 2,
                                                **{name: 2 for name in PLATFORM_STEPS_OK}}
        assert "metrics_counted_in_full" not in [line["event"] for line in logged()[counted_so_far:]], \
            "once the session ended, a scrape adds only what is new again"
